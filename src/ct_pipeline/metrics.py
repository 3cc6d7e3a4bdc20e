"""Reconstruction metrics: one definition for the whole project (DESIGN.md s.5).

Volumes are compared in the network's [0, 1] intensity space (HU window scaled,
data_range = 1) unless a metric says otherwise. The torch functions are
differentiable, so the loss's SSIM term is this same SSIM.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# Stabilisers of Wang et al. (2004) for data_range = 1.
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# PSNR of identical volumes is infinite; reports cap it so means stay finite.
PSNR_CAP_DB = 100.0


def _as_5d(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        return x[None, None]
    if x.ndim == 4:
        return x[:, None]
    if x.ndim == 5:
        return x
    raise ValueError(f"expected a (D, H, W), (B, D, H, W) or (B, C, D, H, W) volume, got {tuple(x.shape)}")


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur_3d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' like scikit-image (no padding)."""
    channels = x.shape[1]
    k = kernel.to(x.dtype).to(x.device)
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = k.numel()
        x = F.conv3d(x, k.view(shape).expand(channels, 1, *shape[2:]), groups=channels)
    return x


def ssim_map_3d(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Local 3-D SSIM with an 11^3 Gaussian window (sigma 1.5), valid region only."""
    x, y = _as_5d(x), _as_5d(y)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim_3d needs every side >= {SSIM_WINDOW}, got {tuple(x.shape[2:])}")
    kernel = gaussian_kernel_1d()
    c1, c2 = SSIM_C1 * data_range**2, SSIM_C2 * data_range**2
    mu_x, mu_y = _blur_3d(x, kernel), _blur_3d(y, kernel)
    # Unbiased-free local moments, as Wang et al. and scikit-image (gaussian) use.
    var_x = _blur_3d(x * x, kernel) - mu_x**2
    var_y = _blur_3d(y * y, kernel) - mu_y**2
    cov = _blur_3d(x * y, kernel) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim_3d(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean 3-D SSIM per volume, shape (B,) (a 0-d tensor for a single volume)."""
    single = x.ndim == 3
    values = ssim_map_3d(x, y, data_range).flatten(1).mean(dim=1)
    return values[0] if single else values


def psnr_3d(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE) over the whole volume, capped at PSNR_CAP_DB."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    if mse == 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10 * math.log10(data_range**2 / mse))
