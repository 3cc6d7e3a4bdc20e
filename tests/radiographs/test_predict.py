"""``predict`` on a folder of films: the same reconstruction as the DRR path."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from films import ANGLES, GRID, MODEL, phantom, render, write_dx, write_png

from ct_pipeline.ct import CTVolume
from ct_pipeline.datasets import RadiographFolderDataset
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.inference import ModelBundle, Refinement, reprojection_scores
from ct_pipeline.metrics import psnr_3d, to_unit
from ct_pipeline.models import build_model
from ct_pipeline.pipelines.predict.nodes import (
    LOW_NCC,
    LOW_NETWORK_NCC,
    calibrate_radiographs,
    reconstruct_volumes,
    score_reprojections,
)

# The films' scatter taken out as given: none (the tests' films have none).
NO_SCATTER = {"estimate_scatter": False, "scatter": {"fraction": 0.0, "sigma_mm": 72.0}}
# Another source distance, finer pixels and a larger film than the model's.
FILM = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(80, 72), pixel_mm=9.0)
# An 8-view model's angles: all but 0 and 90 deg without a view name.
EIGHT = tuple(22.5 * k for k in range(8))


def _bundle(angles: tuple[float, ...] = ANGLES) -> ModelBundle:
    torch.manual_seed(0)
    network = build_model("tiny", MODEL, GRID, len(angles))
    return ModelBundle(
        state_dict=network.state_dict(),
        model="tiny",
        model_overrides={},
        geometry=MODEL,
        grid=GRID,
        angles_deg=angles,
        hu_window=(-1000.0, 1500.0),
        refinement=Refinement(steps=5, prior_weight=3.0),
    )


def _model_drrs(truth: CTVolume, angles: tuple[float, ...] = ANGLES) -> DRRSet:
    """The DRR set the model was trained on, of ``truth`` at its centre."""
    return DRRSet(
        projections=np.stack([render(a) for a in angles]),
        angles_deg=np.asarray(angles),
        geometry=MODEL,
        isocentre_mm=truth.centre_mm,
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr_3d(torch.from_numpy(to_unit(a)), torch.from_numpy(to_unit(b))))


def test_films_reconstruct_as_their_drrs_do(tmp_path):
    """DICOM (MONOCHROME2, turned for display) and PNG + sidecar films of
    other pixel grids give the reconstruction of the model's own DRRs."""
    (tmp_path / "dicom").mkdir()
    for angle, name, orientation in ((0.0, "pa", ("R", "H")), (90.0, "ll", ("A", "F"))):
        write_dx(
            tmp_path / "dicom" / f"{name}.dcm",
            render(angle, FILM),
            angle,
            orientation=orientation,
            photometric="MONOCHROME2",
            geometry=FILM,
        )
        write_png(
            tmp_path / f"png_{name}.png", render(angle, FILM), angle, geometry=FILM
        )
    bundle = _bundle()
    films = RadiographFolderDataset(str(tmp_path)).load()
    assert sorted(films) == ["dicom", "png"]
    views = calibrate_radiographs(films, bundle, 0.02, NO_SCATTER)
    from_films = reconstruct_volumes(views, bundle)

    truth = phantom()
    (reference,) = reconstruct_volumes({"npz": _model_drrs(truth)}, bundle).values()

    for volume in from_films.values():
        np.testing.assert_allclose(volume.affine, reference.affine)
        # Against the truth within 0.3 dB, and close to the DRR path's volume
        # (the films differ by quantisation and the averaging of finer pixels).
        assert abs(_psnr(volume.hu, truth.hu) - _psnr(reference.hu, truth.hu)) < 0.3
        assert _psnr(volume.hu, reference.hu) > 35
    table = score_reprojections(from_films, views, bundle)
    assert list(table["patient"]) == ["dicom", "png"]
    assert set(table.columns) >= {"reprojection/psnr", "reprojection/ncc/90deg"}


def test_eight_films_reconstruct_as_their_drrs_do(tmp_path):
    """An 8-view model from DICOM and PNG films whose angles are given
    explicitly (PositionerPrimaryAngle, view_angle_deg; oblique orientation
    letters, one film turned for display): the DRR path's reconstruction."""
    films_dir = tmp_path / "p1"
    films_dir.mkdir()
    for index, angle in enumerate(EIGHT):
        if index % 2:
            write_png(
                films_dir / f"{angle:g}.png", render(angle, FILM), angle, geometry=FILM
            )
        else:
            write_dx(
                films_dir / f"{angle:g}.dcm",
                render(angle, FILM),
                angle,
                geometry=FILM,
                # 135 deg: columns toward the head, rows opposite to u (RP).
                orientation=("H", "LA") if angle == 135.0 else None,
            )
    bundle = _bundle(EIGHT)
    films = RadiographFolderDataset(str(tmp_path)).load()
    views = calibrate_radiographs(films, bundle, 0.02, NO_SCATTER)
    assert views["p1"].angles_deg.tolist() == list(EIGHT)
    (volume,) = reconstruct_volumes(views, bundle).values()
    truth = phantom()
    (reference,) = reconstruct_volumes(
        {"npz": _model_drrs(truth, EIGHT)}, bundle
    ).values()
    assert abs(_psnr(volume.hu, truth.hu) - _psnr(reference.hu, truth.hu)) < 0.3
    assert _psnr(volume.hu, reference.hu) > 35


def test_a_film_at_an_angle_the_model_lacks_names_the_views_it_knows(tmp_path):
    for angle in (*EIGHT[:-1], 150.0):
        write_dx(tmp_path / f"p1_{angle:g}.dcm", render(angle), angle)
    films = RadiographFolderDataset(str(tmp_path)).load()
    with pytest.raises(
        ValueError,
        match=r"p1_150\.dcm: the model was not trained for a view at 150 deg; "
        r"it knows \[0\.0, 22\.5, 45\.0, 67\.5, 90\.0, 112\.5, 135\.0, 157\.5\]",
    ):
        calibrate_radiographs(films, _bundle(EIGHT), 0.02, NO_SCATTER)


def test_a_bad_film_stops_predict_before_anything_is_written(tmp_path):
    write_dx(tmp_path / "a_pa.dcm", render(0.0), drop=("DistanceSourceToDetector",))
    with pytest.raises(ValueError, match=r"a_pa\.dcm: lacks DistanceSourceToDetector"):
        calibrate_radiographs(
            RadiographFolderDataset(str(tmp_path)).load(), _bundle(), 0.02, NO_SCATTER
        )


def test_a_volume_that_does_not_explain_its_views_is_warned(caplog):
    truth = phantom()
    views = _model_drrs(truth)
    air = CTVolume(hu=np.full_like(truth.hu, -1000.0), affine=truth.affine)
    with caplog.at_level(logging.WARNING):
        table = score_reprojections(
            {"p": truth, "q": air}, {"p": views, "q": views}, _bundle()
        )
    assert table["reprojection/ncc"].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    warned = [
        r.getMessage()
        for r in caplog.records
        if "explains its views poorly" in r.getMessage()
    ]
    assert len(warned) == 1 and warned[0].startswith("q:")


def _rescued(caplog: pytest.LogCaptureFixture) -> tuple[ModelBundle, DRRSet, dict]:
    """An untrained network whose volume explains the phantom's views poorly,
    refined enough to explain them well (NCC 0.69 before, 0.999 after), and
    the scores ``predict`` gives it, warnings captured."""
    bundle = dataclasses.replace(_bundle(), refinement=Refinement(steps=30, lr=0.1))
    views = _model_drrs(phantom())
    volumes = reconstruct_volumes({"p": views}, bundle)
    with caplog.at_level(logging.WARNING):
        table = score_reprojections(volumes, {"p": views}, bundle)
    (row,) = table.to_dict("records")
    return bundle, views, row


def test_the_network_s_own_volume_is_scored_beside_the_refined_one(caplog):
    bundle, views, row = _rescued(caplog)
    alone = dataclasses.replace(bundle, refinement=Refinement())
    (network_volume,) = reconstruct_volumes({"p": views}, alone).values()
    expected = reprojection_scores(network_volume, views, "reprojection_network")
    assert expected == pytest.approx(
        {k: v for k, v in row.items() if k.startswith("reprojection_network/")},
        rel=1e-9,
    )
    assert set(row) >= {
        "reprojection_network/ncc",
        "reprojection_network/psnr",
        "reprojection_network/ncc/90deg",
    }
    assert row["reprojection/ncc"] > row["reprojection_network/ncc"] + 0.1


def test_views_the_network_alone_explains_poorly_are_warned_though_refined_well(
    caplog,
):
    _, _, row = _rescued(caplog)
    assert (
        row["reprojection/ncc"]
        > LOW_NCC
        > LOW_NETWORK_NCC
        > row["reprojection_network/ncc"]
    )
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.startswith(
        "p: the network's own volume, before the refinement, fits its views poorly"
    )
    assert "reprojection_network/ncc 0.69" in warned
    assert "a scatter halo left in" in warned and "the films show a chest" in warned


def test_predict_on_films_writes_a_figure_per_patient(tmp_path):
    """The figure shows each film as stored, with its own orientation letters."""
    from PIL import Image

    from ct_pipeline.datasets import PatientFolderDataset
    from ct_pipeline.evaluation.figures import radiograph_figure
    from ct_pipeline.pipelines.predict.nodes import radiograph_figures

    films_dir = tmp_path / "films" / "p1"
    films_dir.mkdir(parents=True)
    write_dx(films_dir / "pa.dcm", render(0.0), orientation=("R", "H"))
    write_dx(films_dir / "ll.dcm", render(90.0), 90.0)
    bundle = _bundle()
    films = RadiographFolderDataset(str(tmp_path / "films")).load()
    views = calibrate_radiographs(films, bundle, 0.02, NO_SCATTER)
    volumes = reconstruct_volumes(views, bundle)
    figures = radiograph_figures(films, views, volumes, bundle)
    out = PatientFolderDataset(
        path=str(tmp_path / "08_reporting" / "radiograph_figures"),
        dataset="ct_pipeline.datasets.FigureDataset",
        filename_suffix=".png",
    )
    out.save(figures)
    with Image.open(tmp_path / "08_reporting" / "radiograph_figures" / "p1.png") as png:
        assert png.size[0] > 400 and png.size[1] > 400

    read = films["p1"]()
    figure = radiograph_figure(
        read, views["p1"].projections, views["p1"].projections, ANGLES,
        volumes["p1"].hu, title="p1",
    )  # fmt: skip
    pa_axes = next(ax for ax in figure.axes if ax.get_title() == "as stored: pa.dcm")
    # ("R", "H"): columns run to the patient's right, rows to the head.
    assert sorted(t.get_text() for t in pa_axes.texts) == ["F", "H", "L", "R"]
