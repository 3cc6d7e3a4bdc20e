"""Reconstruction metrics: one definition for the whole project.

Volumes are compared in the network's [0, 1] intensity space (HU window scaled,
data_range = 1) unless a metric says otherwise. The torch functions are
differentiable, so the loss's SSIM term is this same SSIM.

Conventions shared by every metric here:

- Volumes are RAS+ arrays indexed (i, j, k) = (Right, Anterior, Superior)
 . Slice metrics average over axial slices, i.e. over axis 2 (k).
- SSIM uses a Gaussian window of sigma 1.5 truncated to 11 samples per axis,
  population (not sample) moments and only the region where the window fits
  inside the volume: scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
- PSNR of identical inputs is infinite; every PSNR here is capped at
  PSNR_CAP_DB so that means over patients stay finite. SSIM of identical
  inputs is exactly 1.
- Evaluation functions accept numpy arrays or torch tensors and return floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# Stabilisers of Wang et al. (2004) for data_range = 1.
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# PSNR of identical volumes is infinite; reports cap it so means stay finite.
PSNR_CAP_DB = 100.0
# The network target's HU window, close to X2CT-GAN's.
HU_WINDOW = (-1000.0, 1500.0)
# Body = ground truth above this HU (between air/lung and fat), grown by a few
# voxels so that the skin boundary, where models blur, is scored too.
BODY_THRESHOLD_HU = -500.0
BODY_DILATION_VOXELS = 2

ArrayLike = np.ndarray | torch.Tensor
# The scaling functions return the type they are given.
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_5d(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        return x[None, None]
    if x.ndim == 4:
        return x[:, None]
    if x.ndim == 5:
        return x
    raise ValueError(
        f"expected a (D, H, W), (B, D, H, W) or (B, C, D, H, W) volume, got {tuple(x.shape)}"
    )


def _as_volume(x: ArrayLike, name: str) -> torch.Tensor:
    """A detached float64 3-D tensor: evaluation wants accuracy, not gradients."""
    t = torch.as_tensor(x).detach().to(torch.float64)
    if t.ndim != 3:
        raise ValueError(
            f"{name} must be a 3-D (I, J, K) volume, got shape {tuple(t.shape)}"
        )
    return t


def _check_same_shape(x: ArrayLike, y: ArrayLike) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"volumes must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def gaussian_kernel_1d(
    size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA
) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(
    x: torch.Tensor, kernel: torch.Tensor, dims: tuple[int, ...] = (0, 1, 2)
) -> torch.Tensor:
    """Separable Gaussian filter of a (B, C, D, H, W) tensor along the spatial
    ``dims``, 'valid' like scikit-image (no padding): blurred axes shrink.

    Each axis is one matrix product with a banded (n - window + 1, n) matrix
    rather than a convolution: the same sums, but several times faster forward
    and backward on CPU, where convolutions of one channel are slow (the loss's
    SSIM term runs this every training step).
    """
    k = kernel.to(x.dtype).to(x.device)
    window = k.numel()
    for dim in dims:
        axis = 2 + dim
        n = x.shape[axis]
        rows = torch.arange(n - window + 1, device=x.device)[:, None]
        columns = rows + torch.arange(window, device=x.device)[None]
        band = x.new_zeros(n - window + 1, n)
        band.scatter_(1, columns, k.expand(n - window + 1, window))
        x = torch.movedim(torch.movedim(x, axis, -1) @ band.T, -1, axis)
    return x


def _ssim_map(
    x: torch.Tensor, y: torch.Tensor, data_range: float, dims: tuple[int, ...]
) -> torch.Tensor:
    kernel = gaussian_kernel_1d()
    c1, c2 = SSIM_C1 * data_range**2, SSIM_C2 * data_range**2
    # The five local means in one pass: channels stacked, blurred together.
    channels = x.shape[1]
    mu_x, mu_y, xx, yy, xy = _blur(
        torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel, dims
    ).split(channels, dim=1)
    # Population local moments, as Wang et al. and scikit-image (gaussian) use.
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim_map_3d(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0
) -> torch.Tensor:
    """Local 3-D SSIM with an 11^3 Gaussian window (sigma 1.5), valid region only."""
    x, y = _as_5d(x), _as_5d(y)
    if x.shape != y.shape:
        raise ValueError(
            f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim_3d needs every side >= {SSIM_WINDOW}, got {tuple(x.shape[2:])}"
        )
    return _ssim_map(x, y, data_range, dims=(0, 1, 2))


def ssim_3d(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean 3-D SSIM per volume, shape (B,) (a 0-d tensor for a single volume)."""
    single = x.ndim == 3
    values = ssim_map_3d(x, y, data_range).flatten(1).mean(dim=1)
    return values[0] if single else values


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10 * math.log10(data_range**2 / mse))


def psnr_3d(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE) over the whole volume, capped at PSNR_CAP_DB."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return _psnr_from_mse(mse, data_range)


def ncc(x: ArrayLike, y: ArrayLike) -> float:
    """Normalised cross-correlation (Pearson's r) of two same-shape arrays:
    1 when one rises linearly with the other; 0 when either is constant."""
    _check_same_shape(x, y)
    a = torch.as_tensor(x).double().flatten()
    b = torch.as_tensor(y).double().flatten()
    a, b = a - a.mean(), b - b.mean()
    norm = (a.norm() * b.norm()).item()
    return 0.0 if norm == 0 else float((a @ b).item() / norm)


def psnr_slice(pred: ArrayLike, true: ArrayLike, data_range: float = 1.0) -> float:
    """Mean over axial slices (axis 2, k = superior) of the 2-D PSNR, each capped.

    X2CT-GAN style: reads a few dB above psnr_3d because slices through air
    score very high and the log is taken before averaging.
    """
    x, y = _as_volume(pred, "pred"), _as_volume(true, "true")
    _check_same_shape(x, y)
    mse_per_slice = ((x - y) ** 2).mean(dim=(0, 1))  # (K,)
    return float(
        np.mean([_psnr_from_mse(m, data_range) for m in mse_per_slice.tolist()])
    )


def ssim_slice(pred: ArrayLike, true: ArrayLike, data_range: float = 1.0) -> float:
    """Mean over axial slices (axis 2, k = superior) of the 2-D SSIM.

    Each (I, J) slice gets the 11x11 Gaussian-window SSIM of scikit-image; the
    window is applied along i and j only, so k stays untouched and every slice
    is scored on its own.
    """
    x, y = _as_volume(pred, "pred"), _as_volume(true, "true")
    _check_same_shape(x, y)
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim_slice needs slices of at least {SSIM_WINDOW}^2, got {tuple(x.shape[:2])}"
        )
    ssim = _ssim_map(
        x[None, None], y[None, None], data_range, dims=(0, 1)
    )  # (1, 1, I', J', K)
    return float(ssim[0, 0].mean(dim=(0, 1)).mean())


def to_unit(hu: ArrayT, hu_window: Sequence[float] = HU_WINDOW) -> ArrayT:
    """HU -> the network's [0, 1] target: clip to ``hu_window``, scale linearly.

    The one definition of the window scaling; keeps the input's type (numpy or
    torch) so both the data pipeline and the evaluation use it.
    """
    low, high = _check_window(hu_window)
    clipped = (
        hu.clip(low, high) if isinstance(hu, torch.Tensor) else np.clip(hu, low, high)
    )
    return (clipped - low) / (high - low)


def to_hu(unit: ArrayT, hu_window: Sequence[float] = HU_WINDOW) -> ArrayT:
    """[0, 1] -> HU, the inverse of ``to_unit`` inside the window. Predictions
    are clipped to [0, 1] first, so the result always lies in ``hu_window``."""
    low, high = _check_window(hu_window)
    clipped = (
        unit.clip(0.0, 1.0)
        if isinstance(unit, torch.Tensor)
        else np.clip(unit, 0.0, 1.0)
    )
    return low + clipped * (high - low)


def _check_window(hu_window: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in hu_window)
    if not low < high:
        raise ValueError(
            f"hu_window must be (low, high) with low < high, got {tuple(hu_window)}"
        )
    return low, high


def body_mask(
    true_hu: ArrayLike,
    body_threshold_hu: float = BODY_THRESHOLD_HU,
    dilation_voxels: int = BODY_DILATION_VOXELS,
) -> np.ndarray:
    """Boolean mask of the body: ground truth above ``body_threshold_hu``,
    dilated ``dilation_voxels`` times with the 6-neighbour cross, i.e. every
    voxel within city-block distance ``dilation_voxels`` of the thresholded set
    (a lone voxel grows to 1 + 6 + 18 = 25 voxels for two steps)."""
    hu = _as_volume(true_hu, "true_hu").numpy()
    mask = hu > body_threshold_hu
    if dilation_voxels > 0:
        mask = ndimage.binary_dilation(mask, iterations=dilation_voxels)
    if not mask.any():
        raise ValueError(f"no body: no ground-truth voxel above {body_threshold_hu} HU")
    return mask


def mae_hu(
    pred_hu: ArrayLike, true_hu: ArrayLike, body_threshold_hu: float = BODY_THRESHOLD_HU
) -> float:
    """Mean absolute error in HU over ``body_mask(true_hu, body_threshold_hu)``."""
    x, y = (
        _as_volume(pred_hu, "pred_hu").numpy(),
        _as_volume(true_hu, "true_hu").numpy(),
    )
    _check_same_shape(x, y)
    mask = body_mask(y, body_threshold_hu)
    return float(np.abs(x[mask] - y[mask]).mean())


def psnr_body(
    pred_unit: ArrayLike,
    true_unit: ArrayLike,
    true_hu: ArrayLike,
    body_threshold_hu: float = BODY_THRESHOLD_HU,
    data_range: float = 1.0,
) -> float:
    """PSNR in [0, 1] space over ``body_mask(true_hu)`` only: air, often half
    the cube, is left out so that it cannot flatter the score."""
    x, y = (
        _as_volume(pred_unit, "pred_unit").numpy(),
        _as_volume(true_unit, "true_unit").numpy(),
    )
    _check_same_shape(x, y)
    mask = body_mask(true_hu, body_threshold_hu)
    if mask.shape != x.shape:
        raise ValueError(
            f"true_hu shape {mask.shape} differs from the volumes' {x.shape}"
        )
    return _psnr_from_mse(float(((x[mask] - y[mask]) ** 2).mean()), data_range)


# Spatial frequencies above this (cycles per voxel; Nyquist is 0.5) count as
# "high": the top half of the band, where blur removes energy first.
HF_CUTOFF = 0.25


def hf_energy_ratio(
    pred: ArrayLike, true: ArrayLike, cutoff: float = HF_CUTOFF
) -> float:
    """Sharpness: spectral energy above ``cutoff`` of ``pred`` over that of ``true``.

    1 means as much fine detail as the truth; a blurred reconstruction scores
    below 1, one with invented texture or noise above. Radial frequency of the
    orthonormal 3-D FFT, so the score does not depend on the volume's size.
    """
    if not 0 < cutoff < 0.5 * 3**0.5:
        raise ValueError(
            f"cutoff must be in (0, {0.5 * 3**0.5:.3f}) cycles/voxel, got {cutoff}"
        )
    x, y = _as_volume(pred, "pred"), _as_volume(true, "true")
    _check_same_shape(x, y)
    axes = [torch.fft.fftfreq(n, dtype=torch.float64) for n in x.shape]
    radius = torch.stack(torch.meshgrid(*axes, indexing="ij")).norm(dim=0)
    high = radius > cutoff

    def energy(v: torch.Tensor) -> float:
        spectrum = torch.fft.fftn(v.double(), norm="ortho")
        return float((spectrum.abs() ** 2)[high].sum())

    truth = energy(y)
    if truth == 0:
        raise ValueError(
            "the truth has no energy above the cutoff: the ratio is undefined"
        )
    return energy(x) / truth


def evaluate_volume(
    pred_unit: ArrayLike,
    true_unit: ArrayLike,
    true_hu: ArrayLike,
    hu_window: tuple[float, float] = HU_WINDOW,
) -> dict[str, float]:
    """Every metric of the project (README, Conventions) for one reconstructed volume.

    ``pred_unit`` and ``true_unit`` are [0, 1] volumes (``to_unit`` of HU);
    ``true_hu`` is the ground truth in HU, which defines the body mask. The HU
    error is measured against the truth clipped to ``hu_window``: the range the
    network can represent, so that metal or field-of-view padding outside it
    does not swamp the score.
    """
    pred, true = _as_volume(pred_unit, "pred_unit"), _as_volume(true_unit, "true_unit")
    hu = _as_volume(true_hu, "true_hu")
    _check_same_shape(pred, true)
    _check_same_shape(true, hu)
    return {
        "psnr_3d": psnr_3d(pred, true),
        "ssim_3d": float(ssim_3d(pred, true)),
        "psnr_slice": psnr_slice(pred, true),
        "ssim_slice": ssim_slice(pred, true),
        "mae_hu": mae_hu(to_hu(pred, hu_window), hu.clip(*_check_window(hu_window))),
        "psnr_body": psnr_body(pred, true, hu),
    }
