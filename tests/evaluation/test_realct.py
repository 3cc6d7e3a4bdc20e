"""The real-CT check: a CT the model never saw, views from its finer anatomy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ct_pipeline.ct import CubeGrid, save_ct
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.evaluation import realct
from ct_pipeline.inference import ModelBundle, Refinement
from ct_pipeline.models import build_model
from ct_pipeline.phantoms import chest_phantom
from ct_pipeline.pipelines.evaluate.nodes import score_real_ct

GEOMETRY = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(24, 24), pixel_mm=24.0)
GRID = CubeGrid(16, 24.0)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    torch.manual_seed(0)
    network = build_model("tiny", GEOMETRY, GRID, 2)
    return ModelBundle(
        state_dict=network.state_dict(),
        model="tiny",
        model_overrides={},
        geometry=GEOMETRY,
        grid=GRID,
        angles_deg=(0.0, 90.0),
        hu_window=(-1000.0, 1500.0),
        refinement=Refinement(steps=5, lr=0.01, prior_weight=3.0),
    )


@pytest.fixture(scope="module")
def ct():
    return chest_phantom(4, size_vox=64, spacing_mm=6.0)


def _drr_sets() -> dict[str, DRRSet]:
    return {
        "p": DRRSet(
            projections=np.zeros((1, 24, 24), np.float32),
            angles_deg=np.zeros(1),
            geometry=GEOMETRY,
            isocentre_mm=np.zeros(3),
            mu_water_per_mm=0.019,
        )
    }


def test_the_case_is_the_models_grid_with_views_from_finer_anatomy(ct, bundle):
    case = realct.prepare_case(ct, bundle, 0.02)
    assert case.truth.hu.shape == (16, 16, 16)
    assert CubeGrid.of(case.truth).spacing_mm == 24.0
    np.testing.assert_allclose(case.views.isocentre_mm, case.truth.centre_mm)
    assert case.views.projections.shape == (2, 24, 24)
    assert case.views.geometry == GEOMETRY
    # Views of the truth cube itself would differ: these see 6 mm voxels.
    cube_views = render_drrs(case.truth, GEOMETRY, [0.0, 90.0])
    relative = np.linalg.norm(case.views.projections - cube_views) / np.linalg.norm(
        cube_views
    )
    assert 0.002 < relative < 0.2


def test_scores_as_shipped_and_of_the_network_alone(ct, bundle):
    case = realct.prepare_case(ct, bundle, 0.02)
    shipped, alone, reconstruction = realct.score_case(case, bundle)
    assert set(shipped) == set(alone) >= {"psnr_3d", "ssim_3d", "psnr_body"}
    assert all(np.isfinite(v) for v in (*shipped.values(), *alone.values()))
    assert shipped["psnr_3d"] != alone["psnr_3d"]  # the refinement moved it
    assert reconstruction.hu.shape == case.truth.hu.shape


def test_the_node_scores_a_given_ct_file(tmp_path, ct, bundle):
    path = tmp_path / "chest.nii.gz"
    save_ct(ct, path)
    metrics, figure = score_real_ct(bundle, _drr_sets(), {"real_ct": str(path)})
    assert {"realct/psnr_3d", "realct/ssim_3d", "realct/psnr_body"} <= set(metrics)
    assert "realct_network/psnr_3d" in metrics
    assert all(np.isfinite(m["value"]) for m in metrics.values())
    assert "chest.nii.gz" in figure._suptitle.get_text()


def test_without_a_ct_the_check_is_skipped_in_one_line(monkeypatch, caplog, bundle):
    monkeypatch.setattr(
        "ct_pipeline.pipelines.evaluate.nodes.installed_chest_ct", lambda: None
    )
    with caplog.at_level(logging.INFO):
        metrics, _ = score_real_ct(bundle, _drr_sets(), {"real_ct": None})
    assert metrics == {}
    assert "Real-CT check skipped" in caplog.text
