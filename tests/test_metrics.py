"""Metrics against hand-computed values and scikit-image's reference code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ct_pipeline.metrics import (
    HU_WINDOW,
    PSNR_CAP_DB,
    body_mask,
    evaluate_volume,
    mae_hu,
    ncc,
    psnr_3d,
    psnr_body,
    psnr_slice,
    ssim_3d,
    ssim_slice,
    to_hu,
    to_unit,
)

SKIMAGE_SSIM = dict(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth-plus-noise truth and a noisy, biased prediction, non-cubic so
    that a swapped axis changes the answer."""
    rng = np.random.default_rng(0)
    i, j, k = np.meshgrid(
        np.linspace(0, 1, 24),
        np.linspace(0, 1, 20),
        np.linspace(0, 1, 16),
        indexing="ij",
    )
    true = 0.5 + 0.3 * np.sin(4 * i) * np.cos(3 * j) * k + 0.05 * rng.random(i.shape)
    pred = np.clip(true + 0.05 * rng.standard_normal(true.shape) + 0.02, 0, 1)
    return pred, true


@pytest.mark.parametrize("offset", [0.1, 0.03, 0.25])
def test_constant_offset_psnr_is_minus_20_log10_offset(offset: float) -> None:
    true = np.full((12, 12, 12), 0.4)
    expected = -20 * math.log10(offset)
    assert psnr_3d(torch.tensor(true + offset), torch.tensor(true)) == pytest.approx(
        expected
    )
    assert psnr_slice(true + offset, true) == pytest.approx(expected)


def test_psnr_slice_averages_per_slice_psnr_over_axis_2() -> None:
    true = np.zeros((12, 12, 2))
    pred = true.copy()
    pred[:, :, 0] += 0.1  # 20 dB on slice k=0
    pred[:, :, 1] += 0.01  # 40 dB on slice k=1
    assert psnr_slice(pred, true) == pytest.approx(30.0)
    # The same errors split along axis 0 give 20 dB and 40 dB on every
    # axial slice's halves: the per-slice PSNR mixes them before the log.
    mixed = np.zeros((2, 12, 12))
    mixed[0] += 0.1
    mixed[1] += 0.01
    per_slice_mse = (0.1**2 + 0.01**2) / 2
    assert psnr_slice(mixed, np.zeros_like(mixed)) == pytest.approx(
        -10 * math.log10(per_slice_mse)
    )


def test_psnr_matches_scikit_image(pair: tuple[np.ndarray, np.ndarray]) -> None:
    from skimage.metrics import peak_signal_noise_ratio

    pred, true = pair
    assert psnr_3d(torch.tensor(pred), torch.tensor(true)) == pytest.approx(
        peak_signal_noise_ratio(true, pred, data_range=1.0)
    )
    per_slice = [
        peak_signal_noise_ratio(true[:, :, k], pred[:, :, k], data_range=1.0)
        for k in range(true.shape[2])
    ]
    assert psnr_slice(pred, true) == pytest.approx(np.mean(per_slice))


def test_ssim_matches_scikit_image_3d_and_per_axial_slice(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    from skimage.metrics import structural_similarity

    pred, true = pair
    expected_3d = structural_similarity(pred, true, **SKIMAGE_SSIM)
    assert float(ssim_3d(torch.tensor(pred), torch.tensor(true))) == pytest.approx(
        expected_3d, abs=1e-9
    )
    expected_slices = np.mean(
        [
            structural_similarity(pred[:, :, k], true[:, :, k], **SKIMAGE_SSIM)
            for k in range(true.shape[2])
        ]
    )
    assert ssim_slice(pred, true) == pytest.approx(expected_slices, abs=1e-9)
    # Slicing along another axis gives another number: the axis matters.
    other_axis = np.mean(
        [
            structural_similarity(pred[i], true[i], **SKIMAGE_SSIM)
            for i in range(true.shape[0])
        ]
    )
    assert abs(other_axis - expected_slices) > 1e-4


def test_identical_volumes_give_ssim_one_and_the_psnr_cap(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    _, true = pair
    hu = to_hu(true)
    scores = evaluate_volume(true, true, hu)
    assert scores["psnr_3d"] == PSNR_CAP_DB
    assert scores["psnr_slice"] == PSNR_CAP_DB
    assert scores["psnr_body"] == PSNR_CAP_DB
    assert scores["ssim_3d"] == pytest.approx(1.0, abs=1e-12)
    assert scores["ssim_slice"] == pytest.approx(1.0, abs=1e-12)
    assert scores["mae_hu"] == 0.0
    # Tiny but non-zero errors stay capped too.
    assert psnr_3d(torch.tensor(true + 1e-7), torch.tensor(true)) == PSNR_CAP_DB


def test_body_mask_dilates_two_voxels_with_the_six_neighbour_cross() -> None:
    hu = np.full((9, 9, 9), -1000.0)
    hu[4, 4, 4] = 40.0
    mask = body_mask(hu)
    # City-block ball of radius 2: 1 + 6 + 18 voxels.
    assert mask.sum() == 25
    assert mask[4, 4, 6] and mask[4, 5, 5] and not mask[4, 5, 6] and not mask[4, 4, 7]
    hu[0, 0, 0] = -500.0  # the threshold is strict: -500 HU is not body
    assert body_mask(hu).sum() == 25


def test_mae_hu_counts_only_the_dilated_body() -> None:
    true = np.full((10, 10, 10), -1000.0)
    true[3:6, 3:6, 3:6] = 50.0  # a 3^3 body
    pred = true + 30.0
    pred[true < -500] = -400.0  # air error 600 HU everywhere outside the body
    body = 27
    # Two cross dilations of a 3^3 cube reach city-block distance 2: the cube,
    # 6 faces x 9 voxels at distance 1 and again at distance 2, and 12 edges x
    # 3 voxels at distance 1 + 1.
    dilated = 27 + 6 * 9 + 6 * 9 + 12 * 3
    shell = dilated - body
    expected = (body * 30.0 + shell * 600.0) / dilated
    assert mae_hu(pred, true) == pytest.approx(expected)
    assert body_mask(true).sum() == dilated


def test_psnr_body_ignores_air_errors() -> None:
    true_hu = np.full((12, 12, 12), -1000.0)
    true_hu[4:8, 4:8, 4:8] = 0.0
    true = to_unit(true_hu)
    mask = body_mask(true_hu)
    pred = true.copy()
    pred[mask] += 0.1
    pred[~mask] += 0.3  # big errors in air do not count
    assert psnr_body(pred, true, true_hu) == pytest.approx(20.0)
    assert psnr_3d(torch.tensor(pred), torch.tensor(true)) < 20.0


def test_to_unit_to_hu_round_trip_inside_the_window_and_clip_outside() -> None:
    hu = np.linspace(-1000.0, 1500.0, 101)
    assert np.allclose(to_hu(to_unit(hu)), hu)
    assert to_unit(np.array([-1000.0, 250.0, 1500.0])).tolist() == [0.0, 0.5, 1.0]
    assert to_unit(np.array([-3024.0, 3000.0])).tolist() == [0.0, 1.0]
    assert to_hu(np.array([-0.2, 1.3])).tolist() == list(HU_WINDOW)
    window = (-200.0, 300.0)
    assert to_unit(torch.tensor([50.0]), window).item() == pytest.approx(0.5)
    assert to_hu(torch.tensor([0.5]), window).item() == pytest.approx(50.0)
    with pytest.raises(ValueError, match="low < high"):
        to_unit(hu, (100.0, -100.0))


def test_evaluate_volume_names_and_torch_inputs(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    pred, true = pair
    hu = to_hu(true)
    from_numpy = evaluate_volume(pred, true, hu)
    from_torch = evaluate_volume(
        torch.tensor(pred, dtype=torch.float32),
        torch.tensor(true, dtype=torch.float32),
        torch.tensor(hu, dtype=torch.float32),
    )
    assert list(from_numpy) == [
        "psnr_3d",
        "ssim_3d",
        "psnr_slice",
        "ssim_slice",
        "mae_hu",
        "psnr_body",
    ]
    for name, value in from_numpy.items():
        assert isinstance(from_torch[name], float)
        assert from_torch[name] == pytest.approx(value, rel=1e-4)
    # mae_hu is the unit-space mean absolute error scaled by the window width
    # (everything here is inside the body).
    width = HU_WINDOW[1] - HU_WINDOW[0]
    assert from_numpy["mae_hu"] == pytest.approx(np.abs(pred - true).mean() * width)


def test_evaluate_volume_rejects_mismatched_shapes() -> None:
    a = np.zeros((12, 12, 12))
    with pytest.raises(ValueError, match="equal shapes"):
        evaluate_volume(a, np.zeros((12, 12, 13)), a)
    with pytest.raises(ValueError, match="3-D"):
        evaluate_volume(a[None], a[None], a[None])


def test_ncc_is_pearsons_r():
    x = np.arange(12.0).reshape(3, 4)
    assert ncc(x, 3 * x + 7) == pytest.approx(1.0)
    assert ncc(x, -x) == pytest.approx(-1.0)
    assert ncc(x, np.ones_like(x)) == 0.0
    noisy = x + np.random.default_rng(0).normal(0, 3, x.shape)
    assert ncc(x, noisy) == pytest.approx(np.corrcoef(x.ravel(), noisy.ravel())[0, 1])


def test_hf_energy_ratio_of_analytic_waves():
    from ct_pipeline.metrics import hf_energy_ratio

    i = torch.arange(16, dtype=torch.float64)[:, None, None].expand(16, 16, 16)
    fine = torch.cos(2 * torch.pi * 6 / 16 * i)  # 0.375 cycles/voxel: above the cutoff
    coarse = torch.cos(2 * torch.pi * 1 / 16 * i)  # 0.0625: below it
    # Half the fine wave's amplitude is a quarter of its energy; the coarse
    # wave adds none above the cutoff, whatever its size.
    assert hf_energy_ratio(0.5 * fine + 3 * coarse, fine) == pytest.approx(0.25)
    assert hf_energy_ratio(fine, fine) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no energy above the cutoff"):
        hf_energy_ratio(fine, torch.zeros_like(fine))
    with pytest.raises(ValueError, match="cutoff must be in"):
        hf_energy_ratio(fine, fine, cutoff=0.0)
