"""The scatter halo taken out of films: exact for the model it inverts, and
still a gain when the real halo is narrower, wider, weaker or stronger."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from films import ANGLES, MODEL, phantom, render, write_dx
from scipy.ndimage import gaussian_filter

from ct_pipeline.datasets import RadiographFolderDataset
from ct_pipeline.hooks.checks import ParameterError, check_parameters
from ct_pipeline.metrics import to_unit
from ct_pipeline.pipelines.predict.nodes import calibrate_radiographs
from ct_pipeline.radiographs import (
    NO_SCATTER,
    Film,
    ScatterModel,
    calibrate,
    level_films,
    read_film,
    remove_scatter,
)
from ct_pipeline.scatter_estimate import estimate_scatter
from ct_pipeline.training.detector import SCATTER_SIGMA_PX, detector_response

PIXEL_MM = 4.0
SIGMA_MM = SCATTER_SIGMA_PX * PIXEL_MM


def _body_views() -> np.ndarray:
    """(1, 64, 64) line integrals of an elliptic body (up to 5: a chest's
    mediastinum) with a brighter 'lung' inside, air around it."""
    rows, cols = np.mgrid[-32:32, -32:32] + 0.5
    body = np.clip(1 - (rows / 26) ** 2 - (cols / 22) ** 2, 0, None)
    lung = np.clip(1 - ((rows + 4) / 12) ** 2 - ((cols - 9) / 6) ** 2, 0, None)
    return (5.0 * np.sqrt(body) - 2.5 * np.sqrt(lung))[None]


def _film(p: np.ndarray, fraction: float) -> np.ndarray:
    """``p`` as the training augmentation's detector records it with a halo
    of ``fraction`` (SCATTER_SIGMA_PX wide), normalised like the open field."""
    one = torch.ones(p.shape[0], dtype=torch.float64)
    return detector_response(
        torch.from_numpy(p), fraction * one, 0 * one, (1 + fraction) * one, None
    ).numpy()


def test_no_fraction_leaves_the_views_as_they_are():
    p = _body_views()[0]
    assert remove_scatter(p, ScatterModel(0.0, SIGMA_MM), PIXEL_MM) is p


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_the_halo_it_models_comes_out(fraction):
    clean = _body_views()[0]
    primary = np.exp(-clean)
    # The model, written independently: a whole Gaussian (scipy's, to 8
    # sigma), the image's edge repeated beyond it.
    halo = gaussian_filter(primary, SCATTER_SIGMA_PX, mode="nearest", truncate=8.0)
    film = -np.log((primary + fraction * halo) / (1 + fraction))
    assert np.abs(film - clean).max() > 1.0  # the halo thins the body a lot
    corrected = remove_scatter(film, ScatterModel(fraction, SIGMA_MM), PIXEL_MM)
    # Exact but for what lies beyond the film's edge, where the correction
    # repeats the measured film and the model the primary: a halo a sigma
    # wide reaches an eighth of the way in.
    np.testing.assert_allclose(corrected, clean, atol=0.02)
    assert np.abs(corrected - clean).mean() < 0.01 * np.abs(film - clean).mean()


def test_the_training_augmentations_halo_comes_out_but_for_its_truncation():
    clean = _body_views()
    film = _film(clean, 0.5)
    corrected = remove_scatter(film[0], ScatterModel(0.5, SIGMA_MM), PIXEL_MM)
    # The augmentation cuts its Gaussian at 3 sigma, so it misses the far open
    # field's share of the halo; where the primary is e^-5 that share is
    # large against it.
    assert np.abs(corrected - clean[0]).mean() < 0.05 * np.abs(film - clean).mean()


@pytest.mark.parametrize(
    ("fraction", "sigma_mm", "error_left"),
    [
        # A halo given narrower or weaker than the real one: half of it out.
        (0.5, 0.75 * SIGMA_MM, 0.55),
        (0.3, SIGMA_MM, 0.55),
        # Wider or stronger: behind the thickest anatomy it would take out
        # more than the film holds; MIN_PRIMARY_FRACTION bounds that, so the
        # line integrals end no further from the truth than they started.
        (0.5, 1.33 * SIGMA_MM, 1.0),
        (0.7, SIGMA_MM, 1.0),
    ],
)
def test_a_halo_other_than_the_real_one(fraction, sigma_mm, error_left):
    clean = _body_views()[0]
    film = _film(clean[None], 0.5)[0]
    before = np.abs(film - clean).mean()
    after = np.abs(
        remove_scatter(film, ScatterModel(fraction, sigma_mm), PIXEL_MM) - clean
    ).mean()
    assert after < error_left * before


def test_predict_takes_the_configured_halo_out_of_dicom_films(tmp_path):
    fraction = 0.5
    sigma_mm = SCATTER_SIGMA_PX * MODEL.pixel_mm
    clean = np.stack([render(a) for a in ANGLES])
    for name, angle, p in zip(
        ("pa", "ll"), ANGLES, _film(clean, fraction), strict=True
    ):
        write_dx(tmp_path / f"p1_{name}.dcm", p, angle)
    films = RadiographFolderDataset(str(tmp_path)).load()
    errors = {}
    for label, given in (("off", 0.0), ("on", fraction)):
        views = calibrate_radiographs(
            films,
            _tiny_bundle(),
            0.02,
            {
                "estimate_scatter": False,
                "scatter": {"fraction": given, "sigma_mm": sigma_mm},
            },
        )
        errors[label] = np.abs(views["p1"].projections - clean).mean()
    assert errors["on"] < 0.2 * errors["off"]


def _tiny_bundle():
    from test_predict import _bundle

    return _bundle()


@pytest.mark.parametrize(
    ("scatter", "message"),
    [
        ({"fraction": -0.1}, r"radiographs\.scatter: radiographs\.scatter\.fraction"),
        ({"sigma_mm": 0}, r"radiographs\.scatter: radiographs\.scatter\.sigma_mm"),
        ({"fractoin": 0.5}, r"unknown parameter 'radiographs\.scatter\.fractoin'"),
    ],
)
def test_a_bad_scatter_parameter_is_refused_at_start(scatter, message):
    defaults = {
        "radiographs": {
            "estimate_scatter": True,
            "scatter": {"fraction": 0.0, "sigma_mm": 72.0},
        }
    }
    with pytest.raises(ParameterError, match=message):
        check_parameters({"radiographs": {"scatter": scatter}}, defaults)


class _KnowsTheBody(torch.nn.Module):
    """A network that returns the phantom whatever the views: what a trained
    one approximates for a body like those it learned."""

    def forward(self, projections: torch.Tensor, angles: torch.Tensor) -> dict:
        unit = to_unit(torch.from_numpy(phantom().hu), (-1000.0, 1500.0))
        return {"volume": unit[None, None]}


def _films_with_halo(added: ScatterModel, tmp_path: Path) -> list[Film]:
    """The phantom's films at ANGLES, each with ``added``'s halo, written as
    DICOM DX and read back."""
    clean = np.stack([render(a) for a in ANGLES])
    return [
        read_film(write_dx(tmp_path / f"{angle:g}.dcm", p, angle))
        for angle, p in zip(
            ANGLES, _with_halo(clean, added, MODEL.pixel_mm), strict=True
        )
    ]


@pytest.mark.parametrize("added", [NO_SCATTER, ScatterModel(0.5, 72.0)])
def test_the_estimate_picks_the_halo_the_films_hold(added, tmp_path):
    films = _films_with_halo(added, tmp_path)
    chosen, scores = _estimate(films)
    assert chosen == added
    # None and 5 fractions x 3 widths; once a halo is chosen, the
    # refinement's neighbours too (none better than the halo the films hold).
    assert len(scores) == 1 + 5 * 3 + (4 * 3 if added.fraction else 0)


def _estimate(films: list) -> tuple[ScatterModel, dict[ScatterModel, float]]:
    bundle = _tiny_bundle()
    levelled = level_films(films, bundle.geometry, bundle.angles_deg)
    return estimate_scatter(_KnowsTheBody(), bundle, levelled, 0.02)


def _with_halo(p: np.ndarray, halo: ScatterModel, pixel_mm: float) -> np.ndarray:
    """(V, H, W) line integrals as a film records them with ``halo`` (its
    model, a whole Gaussian), normalised like the open field far from the body."""
    primary = np.exp(-p.astype(np.float64))
    sigma_px = halo.sigma_mm / pixel_mm
    blurred = np.stack(
        [gaussian_filter(i, sigma_px, mode="nearest", truncate=8.0) for i in primary]
    )
    return -np.log((primary + halo.fraction * blurred) / (1 + halo.fraction))


# A uniform slab whose line integral is known, air in a border of 2 pixels
# around it: the body fills nearly all of the film.
SLAB_P = 3.0
HALO = ScatterModel(0.5, 4 * MODEL.pixel_mm)


def _slab(shape: tuple[int, int], border: int) -> np.ndarray:
    p = np.zeros(shape)
    p[border:-border, border:-border] = SLAB_P
    return p


def test_the_open_field_is_the_primarys_when_the_body_fills_the_film(tmp_path):
    # The halo of the body keeps even the film's brightest pixels well below
    # the bare beam; taken as I0, they would read every line integral short.
    p = _with_halo(_slab(MODEL.detector_px, 2)[None], HALO, MODEL.pixel_mm)[0]
    assert p.min() > 0.03
    # Quantum noise at a chest film's dose (5e4 photons / mm^2 at the
    # detector): the slab's mean line integral is still known.
    photons = 5e4 * MODEL.pixel_mm**2 * np.exp(-p)
    noisy = -np.log(np.random.default_rng(0).poisson(photons) / photons * np.exp(-p))
    film = read_film(write_dx(tmp_path / "pa.dcm", noisy))
    views = calibrate(film, MODEL, 0.0, HALO)
    inside = _slab(MODEL.detector_px, 4) > 0
    assert abs(views[inside].mean() - SLAB_P) < 0.02
    assert np.abs(views[:2]).max() < 0.02  # the air above the slab reads 0
    # Taken out after calibrating against the film's brightest pixels, the
    # halo leaves the slab short by about what the open field lacks.
    after = remove_scatter(calibrate(film, MODEL, 0.0), HALO, MODEL.pixel_mm)
    assert views[inside].mean() - after[inside].mean() > 0.04


def test_the_halo_comes_out_of_the_whole_film_at_its_own_width(tmp_path):
    # A film larger than the model's field, at another source distance: the
    # halo over the model's field comes also from anatomy outside it, and it
    # is 4 of the film's pixels wide, not of the model's.
    film_geometry = dataclasses.replace(
        MODEL, detector_px=(48, 48), sdd_mm=1800.0, sad_mm=1300.0
    )
    clean = _slab(film_geometry.detector_px, 2)[None]
    with_halo = _with_halo(clean, HALO, film_geometry.pixel_mm)[0]
    expected = calibrate(
        read_film(write_dx(tmp_path / "clean.dcm", clean[0], geometry=film_geometry)),
        MODEL,
        0.0,
    )
    film = read_film(write_dx(tmp_path / "pa.dcm", with_halo, geometry=film_geometry))
    corrected = calibrate(film, MODEL, 0.0, HALO)
    np.testing.assert_allclose(corrected, expected, atol=0.03)
    # Taken out after resampling, on the model's field alone, it is not.
    after = remove_scatter(calibrate(film, MODEL, 0.0), HALO, MODEL.pixel_mm)
    assert np.abs(after - expected).mean() > 0.08


def test_the_estimate_finds_a_halo_between_the_grids_values(tmp_path):
    # 0.8 / 90 mm: between the grid's 0.7 and 1.0 and its 72 and 108 mm,
    # where taking out a grid value would leave a loss of several dB.
    added = ScatterModel(0.8, 90.0)
    films = _films_with_halo(added, tmp_path)
    chosen, _ = _estimate(films)
    assert chosen.fraction == pytest.approx(added.fraction, rel=0.1)
    assert chosen.sigma_mm == pytest.approx(added.sigma_mm, rel=0.1)


def test_an_estimate_warns_about_each_film_once(tmp_path, caplog):
    # A PA film too small for the model's detector, from another source
    # distance, and a lateral whose open field clips: predict tries some
    # thirty halos on each, and says what is wrong with each film once.
    small_far = dataclasses.replace(
        MODEL, detector_px=(24, 32), sdd_mm=1800.0, sad_mm=1300.0
    )
    write_dx(tmp_path / "p1_pa.dcm", render(0.0, small_far), geometry=small_far)
    write_dx(tmp_path / "p1_ll.dcm", render(90.0), 90.0, slope=0.5)
    films = RadiographFolderDataset(str(tmp_path)).load()
    parameters = {
        "estimate_scatter": True,
        "scatter": {"fraction": 0.0, "sigma_mm": 72.0},
    }
    with caplog.at_level(logging.WARNING):
        calibrate_radiographs(films, _tiny_bundle(), 0.02, parameters)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3
    for text, source in (
        ("source distances", "p1_pa.dcm"),
        ("does not cover", "p1_pa.dcm"),
        ("clipped", "p1_ll.dcm"),
    ):
        (message,) = [m for m in warned if text in m]
        assert source in message


def test_the_halo_on_coarse_pixels_stays_near_the_full_resolution_one(monkeypatch):
    # 0.6 / 0.8 mm pixels and a halo 90 mm wide: the halo is computed on
    # blocks of 7 pixels, as on a real film of thousands of pixels a side
    # (the small films above keep blocks of 1).
    shape, pixel_mm, halo = (300, 225), (0.6, 0.8), ScatterModel(0.8, 90.0)
    rows, cols = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    clean = 4.5 * np.sqrt(np.clip(1 - (rows / 0.8) ** 2 - (cols / 0.8) ** 2, 0, None))
    primary = np.exp(-clean)
    sigma_px = [halo.sigma_mm / s for s in pixel_mm]
    blurred = gaussian_filter(primary, sigma_px, mode="nearest", truncate=8.0)
    film = -np.log((primary + halo.fraction * blurred) / (1 + halo.fraction))
    coarse = remove_scatter(film, halo, pixel_mm)
    # Blocks of 1 pixel: the inverse at the film's own resolution.
    monkeypatch.setattr("ct_pipeline.radiographs.scatter.HALO_PIXELS_PER_SIGMA", 1e9)
    full = remove_scatter(film, halo, pixel_mm)
    error = np.abs(coarse - full)
    assert 0 < error.max() < 0.03  # HALO_PIXELS_PER_SIGMA's comment: 0.019
    assert error.mean() < 0.005
