"""The DRR stage renders views from finer anatomy than the target cube, and
the views of the mirrored patient beside them."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.ct import CTVolume, CubeGrid, preprocess_ct
from ct_pipeline.ct.preprocess import finer_grid, resample_to_grid
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.phantoms import chest_phantom
from ct_pipeline.pipelines.drr.nodes import drr_geometry, render_drr_sets

PARAMS = {
    "num_views": 4,
    "angles_deg": None,
    "mu_water_per_mm": 0.02,
    "geometry": {
        "beam": "cone",
        "sad_mm": 1000.0,
        "sdd_mm": 1500.0,
        "detector_px": [32, 32],
        "pixel_mm": 18.0,
    },
}


@pytest.fixture(scope="module")
def patient() -> tuple[CTVolume, CTVolume]:
    """(the phantom at 8 mm, its 24 mm cube)."""
    source = chest_phantom(11, size_vox=48, spacing_mm=8.0)
    return source, preprocess_ct(source, 24.0, 16)


def _render(patient, oversample: int):
    source, cube = patient
    params = PARAMS | {"view_oversample": oversample}
    sets = render_drr_sets({"p": lambda: cube}, {}, {"p": lambda: source}, params)
    return sets["p"]()


def test_finer_grid_keeps_the_field_and_refines_the_voxels():
    grid = CubeGrid(16, 24.0, (10.0, -5.0, 3.0))
    fine = finer_grid(grid, 3)
    assert (fine.size, fine.spacing_mm, fine.centre_mm) == (48, 8.0, grid.centre_mm)
    assert fine.extent_mm == pytest.approx(grid.extent_mm)
    with pytest.raises(ValueError, match="oversampling factor"):
        finer_grid(grid, 0)


def test_views_come_from_the_finer_anatomy_with_the_cubes_geometry(patient):
    source, cube = patient
    fine_views, cube_views = _render(patient, 3), _render(patient, 1)
    assert fine_views.anatomy_spacing_mm == pytest.approx(8.0)
    assert cube_views.anatomy_spacing_mm == pytest.approx(24.0)
    np.testing.assert_allclose(fine_views.isocentre_mm, cube.centre_mm)
    assert fine_views.geometry == cube_views.geometry
    # The views of the finer anatomy are those of the 8 mm CT on the cube's
    # field, which the 24 mm cube explains only up to a few per cent.
    geometry, angles = drr_geometry(PARAMS)
    anatomy = resample_to_grid(source, finer_grid(CubeGrid.of(cube), 3))
    np.testing.assert_allclose(
        fine_views.projections, render_drrs(anatomy, geometry, angles), rtol=1e-5
    )
    difference = np.linalg.norm(fine_views.projections - cube_views.projections)
    relative = difference / np.linalg.norm(cube_views.projections)
    assert 0.005 < relative < 0.15


def test_mirrored_views_are_those_of_the_mirrored_patient(patient):
    views = _render(patient, 3)
    assert views.mirrored_projections is not None
    # Mirroring left-right turns the PA view (0 deg) about its vertical axis:
    # the same image with its columns reversed.
    pa = views.angles_deg.tolist().index(0.0)
    np.testing.assert_allclose(
        views.mirrored_projections[pa],
        views.projections[pa][:, ::-1],
        rtol=1e-4,
        atol=1e-4,
    )
    # The lateral view sees the patient from the other side: not a flip of it.
    lateral = views.angles_deg.tolist().index(90.0)
    assert not np.allclose(
        views.mirrored_projections[lateral], views.projections[lateral], atol=1e-3
    )
    chosen = views.select([90.0])
    np.testing.assert_array_equal(
        chosen.mirrored_projections[0], views.mirrored_projections[lateral]
    )
