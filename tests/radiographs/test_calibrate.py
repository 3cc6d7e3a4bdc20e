"""Calibration of DICOM and PNG films made from the renderer's own DRRs:
line integrals recovered, orientation into the project's frame, resampling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from films import ANGLES, MODEL, render, stored_pixels, write_dx, write_png

from ct_pipeline.drr import Geometry
from ct_pipeline.radiographs import films_to_views, read_film
from ct_pipeline.radiographs.calibrate import (
    line_integrals,
    log_intensity,
    open_field_level,
    resample,
)
from ct_pipeline.radiographs.writing import DX_OPEN_FIELD, LOG_UNITS, PNG_OPEN_FIELD

# A film 8 rows and 4 columns larger than the model's detector, same pixel at
# the isocentre: calibration must crop it back exactly.
LARGER = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(40, 36), pixel_mm=18.0)


def quantisation_bound(p: np.ndarray, i0: float) -> np.ndarray:
    """|dp| from rounding I = I0 exp(-p) to an integer: 0.5 / I (first order),
    with 1 % slack for the second order."""
    return 0.505 / (i0 * np.exp(-p.astype(np.float64))) + 1e-6


def calibrated(paths: list[Path]) -> np.ndarray:
    return films_to_views(
        [read_film(p) for p in paths], MODEL, ANGLES, mu_water_per_mm=0.02
    ).projections


def pa_and_lateral(
    tmp_path: Path,
    pa_geometry: Geometry = LARGER,
    lateral_geometry: Geometry = LARGER,
    **tags,
) -> list[Path]:
    """A PA and a left lateral film, each rendered on its geometry (both
    larger than the detector by default) and written with ``tags``."""
    return [
        write_dx(
            tmp_path / "pa.dcm",
            render(0.0, pa_geometry),
            geometry=pa_geometry,
            **tags,
        ),
        write_dx(
            tmp_path / "ll.dcm",
            render(90.0, lateral_geometry),
            90.0,
            geometry=lateral_geometry,
            **tags,
        ),
    ]


def test_pure_steps_invert_the_detector_model():
    p = np.array([[0.0, 0.5], [2.0, 5.0]])
    intensity = 1000.0 * np.exp(-p)
    rising = log_intensity(intensity, "intensity", True, (0.0, 4095.0))
    falling = log_intensity(4095.0 - intensity, "intensity", False, (0.0, 4095.0))
    logged = log_intensity(-np.log(intensity), "log", False, (0.0, 10.0))
    for log_i in (rising, falling, logged):
        level = open_field_level(log_i, fraction=0.25)
        np.testing.assert_allclose(line_integrals(log_i, level), p, atol=1e-9)


@pytest.mark.parametrize(
    ("photometric", "relationship", "sign", "slope", "intercept"),
    [
        ("MONOCHROME1", "LIN", None, 1.0, 0.0),  # raw: values rise with exposure
        ("MONOCHROME2", "LIN", None, 1.0, 0.0),  # full scale - I
        ("MONOCHROME2", "LIN", 1, 2.0, -100.0),  # the sign tag outranks the display
        ("MONOCHROME1", "LOG", 1, 1 / LOG_UNITS, 0.0),  # ln I, 1000 units per ln unit
        ("MONOCHROME2", "LOG", -1, 1 / LOG_UNITS, 0.0),
    ],
)
def test_dicom_dx_recovers_the_line_integrals(
    tmp_path, model_views, photometric, relationship, sign, slope, intercept
):
    paths = pa_and_lateral(
        tmp_path,
        photometric=photometric,
        relationship=relationship,
        sign=sign,
        slope=slope,
        intercept=intercept,
    )
    views = calibrated(paths)
    # LIN: rounding the intensity; LOG: rounding ln I to 1/1000 (|dp| <= 1e-3).
    bound = (
        quantisation_bound(model_views, DX_OPEN_FIELD / slope)
        if relationship == "LIN"
        else 1.01e-3
    )
    assert np.all(np.abs(views - model_views) <= bound)
    assert model_views.max() > 3  # the test means something: dense paths exist


@pytest.mark.parametrize(
    "orientation",
    [("L", "F"), ("R", "F"), ("L", "H"), ("R", "H"), ("F", "L"), ("H", "R")],
)
def test_pa_orientation_lands_the_left_marker_on_the_image_right(
    tmp_path, model_views, orientation
):
    pa = write_dx(
        tmp_path / "pa.dcm",
        render(0.0, LARGER),
        geometry=LARGER,
        orientation=orientation,
    )
    # The stored film itself follows the tag: the marker (on the patient's
    # left, head end; the least exposed pixel) sits toward the tag's L / H ends.
    pixels = stored_pixels(pa)
    marker = np.unravel_index(np.argmin(pixels), pixels.shape)
    toward_high_index = {"L": True, "R": False, "H": False, "F": True}
    col_code, row_code = orientation
    if col_code in "LR":
        assert (marker[1] > pixels.shape[1] / 2) == toward_high_index[col_code]
    else:
        assert (marker[0] > pixels.shape[0] / 2) == toward_high_index[row_code]
    paths = [
        pa,
        write_dx(tmp_path / "ll.dcm", render(90.0, LARGER), 90.0, geometry=LARGER),
    ]
    views = calibrated(paths)
    bound = quantisation_bound(model_views, DX_OPEN_FIELD)
    assert np.all(np.abs(views - model_views) <= bound)
    # The project's PA frame: the patient's left on the image's right, head up.
    row, col = np.unravel_index(np.argmax(views[0]), views[0].shape)
    assert col > 16 and row < 16


@pytest.mark.parametrize("orientation", [("P", "F"), ("A", "F"), ("A", "H")])
def test_lateral_orientation_puts_anterior_on_the_image_left(
    tmp_path, model_views, orientation
):
    paths = [
        write_dx(tmp_path / "pa.dcm", render(0.0, LARGER), geometry=LARGER),
        write_dx(
            tmp_path / "ll.dcm",
            render(90.0, LARGER),
            90.0,
            orientation=orientation,
            geometry=LARGER,
        ),
    ]
    views = calibrated(paths)
    bound = quantisation_bound(model_views, DX_OPEN_FIELD)
    assert np.all(np.abs(views - model_views) <= bound)
    # Left lateral: columns run toward posterior; the marker is anterior.
    row, col = np.unravel_index(np.argmax(views[1]), views[1].shape)
    assert col < 16 and row < 16


def test_an_ap_film_serves_as_the_pa_view_mirrored(tmp_path, model_views):
    # Read as usual, the patient's right on the viewer's left: "L\F".
    ap = render(180.0, LARGER)
    paths = [
        write_dx(
            tmp_path / "ap.dcm", ap, 180.0, orientation=("L", "F"), geometry=LARGER
        ),
        write_dx(tmp_path / "ll.dcm", render(90.0, LARGER), 90.0, geometry=LARGER),
    ]
    pa = calibrated(paths)[0]
    row, col = np.unravel_index(np.argmax(pa), pa.shape)
    assert col > 16 and row < 16
    # The same rays from the other side: only the cone's magnification differs.
    assert np.corrcoef(pa.ravel(), model_views[0].ravel())[0, 1] > 0.97


def test_png_sidecar_recovers_the_line_integrals(tmp_path, model_views):
    paths = [
        write_png(
            tmp_path / "p1_pa.png",
            render(0.0, LARGER),
            geometry=LARGER,
            orientation=("R", "F"),
        ),
        write_png(
            tmp_path / "p1_lat.png",
            render(90.0, LARGER),
            90.0,
            geometry=LARGER,
            view=None,
            view_angle_deg=90,
        ),
    ]
    views = calibrated(paths)
    bound = quantisation_bound(model_views, PNG_OPEN_FIELD)
    assert np.all(np.abs(views - model_views) <= bound)


def test_finer_larger_film_is_averaged_onto_the_detector(tmp_path, model_views):
    # 4 mm pixels at the isocentre against the model's 12 mm, 440 x 400 mm.
    fine = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(110, 100), pixel_mm=6.0)
    views = calibrated(pa_and_lateral(tmp_path, fine, fine))
    # The model's DRRs sample each pixel's centre, the film averages over it:
    # they differ at edges only.
    error = np.abs(views - model_views)
    assert error.mean() < 0.03 * model_views.mean()
    assert np.corrcoef(views.ravel(), model_views.ravel())[0, 1] > 0.995


def test_resampling_centres_and_scales():
    film = np.zeros((9, 9))
    film[4, 4] = 1.0  # the isocentre's projection: the film's centre
    geometry = Geometry(sad_mm=1000, sdd_mm=2000, detector_px=(3, 3), pixel_mm=4.0)
    out, covered = resample(film, (2.0, 2.0), geometry)  # 2 mm at the isocentre
    assert covered
    assert out[1, 1] == out.max() and out[0, 0] == 0.0
    _, covered = resample(film, (0.5, 0.5), geometry)  # 4.5 mm against 6 mm
    assert not covered


def test_a_film_smaller_than_the_detector_is_warned(tmp_path, caplog):
    small = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(24, 32), pixel_mm=18.0)
    with caplog.at_level(logging.WARNING):
        calibrated(pa_and_lateral(tmp_path, pa_geometry=small))
    warned = [
        r.getMessage() for r in caplog.records if "does not cover" in r.getMessage()
    ]
    assert len(warned) == 1 and "pa.dcm" in warned[0]


def test_a_clipped_open_field_is_warned(tmp_path, caplog):
    paths = pa_and_lateral(tmp_path, slope=0.5)  # I0 = 8000 clips at 4095
    with caplog.at_level(logging.WARNING):
        calibrated(paths)
    assert any("clipped" in r.getMessage() for r in caplog.records)
