"""Augmentation moves the patient and re-renders views that agree with the moved target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.training.augment import (
    Augmentation,
    acquired,
    augmented_sample,
    move_volume,
    sample_generator,
)
from ct_pipeline.training.detector import miscalibrated

N, SPACING = 16, 20.0
GRID = CubeGrid(N, SPACING)
GEOMETRY = Geometry(detector_px=(24, 24), pixel_mm=20.0)


def asymmetric_body() -> torch.Tensor:
    """Soft tissue with a bone rod right-anterior of centre: every view tells direction."""
    hu = np.full((N, N, N), -1000.0, dtype=np.float32)
    hu[3:13, 4:12, 2:14] = 40.0
    hu[10:12, 8:10, 4:12] = 1000.0  # right (+i), anterior (+j)
    return torch.from_numpy(hu)


def rendered(hu: torch.Tensor, angles: list[float]) -> np.ndarray:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    return render_drrs(CTVolume(hu.numpy(), affine), GEOMETRY, angles)


def sample(
    aug: Augmentation,
    angles: tuple[float, ...] = (0.0, 90.0),
    seed: int = 0,
    epoch: int = 1,
    index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(views, changed HU cube) of the asymmetric body under ``aug``."""
    return augmented_sample(
        asymmetric_body(),
        GRID,
        GEOMETRY,
        list(angles),
        0.02,
        aug,
        sample_generator(seed, epoch, index),
    )


def test_no_move_gives_the_renderer_s_own_views():
    hu = asymmetric_body()
    views, moved = sample(Augmentation())
    torch.testing.assert_close(moved, hu, atol=1e-2, rtol=0)
    np.testing.assert_allclose(views.numpy(), rendered(hu, [0.0, 90.0]), atol=1e-5)


def test_a_quarter_turn_shows_the_lateral_view_in_the_pa_slot():
    hu = asymmetric_body()
    turned = move_volume(hu, GRID, 90.0, torch.zeros(3))
    np.testing.assert_allclose(
        rendered(turned, [0.0])[0], rendered(hu, [90.0])[0], atol=1e-4
    )
    assert not np.allclose(rendered(turned, [0.0])[0], rendered(hu, [0.0])[0])
    with pytest.raises(ValueError, match=r"not on a 16\^3 grid"):
        move_volume(hu[:8], GRID, 90.0, torch.zeros(3))


def test_a_shift_to_the_patient_s_left_moves_the_pa_image_right():
    """PA film convention: the patient's left is on the image's right (u = d x v)."""
    hu = asymmetric_body()
    moved = move_volume(hu, GRID, 0.0, torch.tensor([-2 * SPACING, 0.0, 0.0]))
    torch.testing.assert_close(
        moved[:-2], hu[2:], atol=1e-2, rtol=0
    )  # content moved towards -i (left)
    before, after = rendered(hu, [0.0])[0], rendered(moved, [0.0])[0]
    cols = np.arange(before.shape[1])
    centroid = lambda img: (img.sum(0) * cols).sum() / img.sum()  # noqa: E731
    assert centroid(after) > centroid(before) + 1.0


def test_a_mirrored_patient_is_the_flipped_cube_with_its_own_views():
    """The mirror is exact: the target is the flipped array; the PA view is the
    flipped PA image (the source stays put); the left lateral view is the
    flipped right lateral view (the mirror takes the source to the other side)."""
    hu = asymmetric_body()
    views, moved = sample(Augmentation(mirror=1.0))
    torch.testing.assert_close(moved, hu.flip(0), atol=0, rtol=0)
    np.testing.assert_allclose(views.numpy(), rendered(hu.flip(0), [0.0, 90.0]))
    np.testing.assert_allclose(
        views[0].numpy(), rendered(hu, [0.0])[0][:, ::-1], atol=1e-4
    )
    np.testing.assert_allclose(
        views[1].numpy(), rendered(hu, [270.0])[0][:, ::-1], atol=1e-4
    )


def test_mirror_probability_draws_both_sides():
    aug, flipped_hu = Augmentation(mirror=0.5), asymmetric_body().flip(0)
    flipped = [
        torch.equal(sample(aug, (0.0,), index=i)[1], flipped_hu) for i in range(16)
    ]
    assert 0 < sum(flipped) < 16


def test_samples_are_a_function_of_seed_epoch_and_index():
    aug = Augmentation(rotate_deg=20.0, shift_mm=30.0)

    def draw(seed: int, epoch: int, index: int) -> torch.Tensor:
        return sample(aug, seed=seed, epoch=epoch, index=index)[0]

    torch.testing.assert_close(draw(0, 3, 5), draw(0, 3, 5))
    assert not torch.allclose(draw(0, 3, 5), draw(0, 4, 5))
    assert not torch.allclose(draw(0, 3, 5), draw(1, 3, 5))


@pytest.mark.parametrize(
    "bad",
    [
        {"rotate_deg": -1.0},
        {"shift_mm": float("nan")},
        {"mirror": 1.5},
        {"magnification": 1.0},
        {"offset_px": -1.0},
        {"flip": True},
    ],
)
def test_bad_augmentation_parameters_are_named(bad):
    with pytest.raises(ValueError, match=r"train\.augment"):
        Augmentation.from_dict(bad)


def test_a_mirror_only_draw_takes_the_stored_views_of_the_finer_anatomy():
    hu = asymmetric_body()
    stored = (torch.full((2, 24, 24), 1.0), torch.full((2, 24, 24), 2.0))
    for probability, expected, target in ((1.0, 2.0, hu.flip(0)), (0.0, 1.0, hu)):
        views, moved = augmented_sample(
            hu,
            GRID,
            GEOMETRY,
            [0.0, 90.0],
            0.02,
            Augmentation(mirror=probability),
            sample_generator(0, 1, 0),
            stored_views=stored,
        )
        assert torch.all(views == expected)
        torch.testing.assert_close(moved, target)
    # A draw that moves the patient renders its views again from the cube.
    views, moved = augmented_sample(
        hu,
        GRID,
        GEOMETRY,
        [0.0, 90.0],
        0.02,
        Augmentation(shift_mm=10.0, mirror=1.0),
        sample_generator(0, 1, 0),
        stored_views=stored,
    )
    np.testing.assert_allclose(views.numpy(), rendered(moved, [0.0, 90.0]), atol=1e-4)


def _acquired(views: torch.Tensor, **terms: float) -> torch.Tensor:
    return acquired(views, Augmentation(**terms), sample_generator(0, 1, 0))


def test_acquisition_terms_change_the_views_as_a_detector_would():
    views = torch.from_numpy(rendered(asymmetric_body(), [0.0, 90.0]))
    assert _acquired(views) is views  # all terms off
    # A flat-field error shifts each view's line integrals by -ln(1 / gain).
    shifted = _acquired(views, gain=0.1) - views
    for offset in shifted:
        assert float(offset.std()) < 1e-5
        assert 0.0 < abs(float(offset.mean())) <= -math.log(0.9) + 1e-6
    # Scatter adds intensity where the body is: it lowers the line integrals.
    scattered = _acquired(views, scatter=0.5)
    assert (
        torch.all(scattered <= views + 1e-6) and float((views - scattered).max()) > 0.01
    )
    # Blur keeps the detected intensity on the detector, spread out.
    blurred = _acquired(views, blur_px=2.0)
    torch.testing.assert_close(
        torch.exp(-blurred).sum((1, 2)),
        torch.exp(-views).sum((1, 2)),
        rtol=0.05,
        atol=0,
    )
    assert not torch.allclose(blurred, views, atol=1e-3)
    # Quantum noise: zero-mean, with the variance 1 / (N exp(-p)) of the log.
    noisy = _acquired(views, photons=1e5)
    error = (noisy - views).double()
    assert abs(float(error.mean())) < 0.01 and 0.0005 < float(error.std()) < 0.2
    torch.testing.assert_close(_acquired(views, photons=1e5), noisy)  # seeded
    with pytest.raises(ValueError, match="gain"):
        Augmentation(gain=1.0)


def _dot(row: int, column: int) -> torch.Tensor:
    image = torch.zeros(1, 32, 32)
    image[0, row, column] = 1.0
    return image


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    rows, columns = torch.meshgrid(
        torch.arange(32.0), torch.arange(32.0), indexing="ij"
    )
    return float((image * rows).sum() / image.sum()), float(
        (image * columns).sum() / image.sum()
    )


def test_an_offset_isocentre_moves_the_views_by_whole_pixels():
    views = _dot(10, 20)
    moved = miscalibrated(views, torch.ones(1), torch.tensor([[3.0, -2.0]]))
    torch.testing.assert_close(moved, _dot(8, 23))  # columns +3, rows -2


def test_a_larger_magnification_scales_the_views_about_the_centre():
    # The detector's centre lies between pixels 15 and 16: a smooth blob 6.5
    # pixels right of it lands 6.5 * 1.1 = 7.15 pixels right.
    rows, columns = torch.meshgrid(
        torch.arange(32.0), torch.arange(32.0), indexing="ij"
    )
    views = torch.exp(-((rows - 15.5) ** 2 + (columns - 22.0) ** 2) / 8.0)[None]
    scaled = miscalibrated(views, torch.tensor([1.1]), torch.zeros(1, 2))
    row, column = _centroid(scaled[0])
    assert row == pytest.approx(15.5, abs=1e-4)
    assert column == pytest.approx(15.5 + 6.5 * 1.1, abs=0.02)


def test_calibration_terms_alone_only_move_the_views():
    views = torch.from_numpy(rendered(asymmetric_body(), [0.0, 90.0]))
    jittered = _acquired(views, magnification=0.05, offset_px=1.5)
    assert not torch.allclose(jittered, views, atol=1e-3)
    # A small geometric change: the total line integral of each view moves by
    # the image's scale squared at most (no detector term changes values).
    ratio = jittered.sum((1, 2)) / views.sum((1, 2))
    assert torch.all((ratio > 0.85) & (ratio < 1.15))
    torch.testing.assert_close(
        _acquired(views, magnification=0.05, offset_px=1.5), jittered
    )  # seeded
