"""What a real X-ray system does to ideal line integrals: a detector's
response (scatter halo, scintillator blur, flat-field error, quantum noise)
and a calibration a little off (magnification, isocentre offset). Pure
functions of the views and the amounts; ``augment.acquired`` draws the
amounts for training, and the tests and benchmarks use them to make films.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Scatter reaches far across the detector: a halo of this many pixels (sigma).
SCATTER_SIGMA_PX = 8.0


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(V, H, W) images, each blurred by its own sigma (pixels; 0 leaves it)."""
    out = []
    for image, s in zip(images, sigma.tolist(), strict=True):
        if s <= 0:
            out.append(image)
            continue
        radius = max(1, math.ceil(3 * s))
        x = torch.arange(-radius, radius + 1, dtype=image.dtype)
        kernel = torch.exp(-(x**2) / (2 * s * s))
        kernel = kernel / kernel.sum()
        padded = F.pad(image[None, None], (radius,) * 4, mode="replicate")
        rows = F.conv2d(padded, kernel.view(1, 1, -1, 1))
        out.append(F.conv2d(rows, kernel.view(1, 1, 1, -1))[0, 0])
    return torch.stack(out)


def detector_response(
    views: torch.Tensor,
    scatter: torch.Tensor,
    blur_px: torch.Tensor,
    gain: torch.Tensor,
    photons: torch.Tensor | None,
    generator: torch.Generator | None = None,
    scatter_sigma_px: float = SCATTER_SIGMA_PX,
) -> torch.Tensor:
    """(V, H, W) line integrals as a detector reports them, each view with its
    own amounts: the intensity exp(-p) gains ``scatter`` (scatter-to-primary
    ratio of a smooth halo ``scatter_sigma_px`` wide), a Gaussian blur of
    ``blur_px`` (sigma, pixels), is divided by ``gain`` (the flat field's error, 1 for none) and counted with
    ``photons`` per open-field pixel (quantum noise; None for none), then
    logged back."""
    count = views.shape[0]
    intensity = torch.exp(-views.double())
    halo = _gaussian_blur(intensity, torch.full((count,), scatter_sigma_px))
    intensity = intensity + scatter.double()[:, None, None] * halo
    intensity = _gaussian_blur(intensity, blur_px)
    intensity = intensity / gain.double()[:, None, None]
    if photons is not None:
        expected = intensity * photons.double()[:, None, None]
        counts = torch.poisson(expected, generator=generator).clamp(min=0.5)
        intensity = counts / photons.double()[:, None, None]
    return (-torch.log(intensity)).to(views.dtype)


def miscalibrated(
    views: torch.Tensor, scale: torch.Tensor, offset_px: torch.Tensor
) -> torch.Tensor:
    """(V, H, W) line integrals as a system whose magnification is ``scale``
    (V,) times the assumed one and whose isocentre projects ``offset_px``
    (V, 2: columns, rows) pixels away from the detector's centre would see
    them. A magnification error of a few percent is, to first order, a
    scaling of the image about the isocentre's projection; the rays'
    divergence barely changes. The edges continue the views' own edges."""
    count, height, width = views.shape
    theta = torch.zeros(count, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    # Normalised units: the detector spans [-1, 1], i.e. W (H) pixels = 2.
    theta[:, 0, 2] = -offset_px[:, 0] * 2.0 / width
    theta[:, 1, 2] = -offset_px[:, 1] * 2.0 / height
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    warped = F.grid_sample(
        views[:, None].float(),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return warped[:, 0].to(views.dtype)
