"""X-ray physics: HU -> linear attenuation, and optional detector realism.

The project's physics: mu = mu_water * (1 + HU / 1000) clipped at 0, and a DRR
pixel stores the line integral p = integral of mu dl. Noise and blur act on
the detected intensity I = I0 * exp(-p) and are converted back to line
integrals, so every stage downstream still sees p. Both are off unless asked.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# Water's linear attenuation at diagnostic energies (~70 keV effective), 1/mm.
MU_WATER_PER_MM = 0.02


def hu_to_mu(hu: ArrayT, mu_water_per_mm: float = MU_WATER_PER_MM) -> ArrayT:
    """Linear attenuation in 1/mm from Hounsfield units (numpy or torch).

    Clipping at 0 makes scanner padding (-2048, -3024) count as air instead of
    a physically impossible negative attenuation.
    """
    if mu_water_per_mm <= 0:
        raise ValueError(f"mu_water_per_mm must be > 0, got {mu_water_per_mm}")
    mu = mu_water_per_mm * (1.0 + hu / 1000.0)
    if isinstance(mu, torch.Tensor):
        return mu.clamp(min=0.0)
    return np.clip(mu, 0.0, None).astype(np.result_type(hu, np.float32), copy=False)


def add_poisson_noise(
    projections: np.ndarray, photons_per_pixel: float, seed: int
) -> np.ndarray:
    """Quantum noise: Poisson counts of mean I0 * exp(-p), back to line integrals.

    A pixel that counts no photon is given half a photon: its line integral is
    then large but finite, as a real detector's log step clamps it.
    """
    if photons_per_pixel <= 0:
        raise ValueError(f"photons_per_pixel must be > 0, got {photons_per_pixel}")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(photons_per_pixel * np.exp(-projections.astype(np.float64)))
    counts = np.maximum(counts, 0.5)
    return (-np.log(counts / photons_per_pixel)).astype(np.float32)


def detector_blur(projections: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian spread of the scintillator light, per view, in pixels.

    The blur mixes detected intensities, not line integrals, so it is applied
    to exp(-p); projections are (V, H, W) or (H, W).
    """
    if sigma_px < 0:
        raise ValueError(f"sigma_px must be >= 0, got {sigma_px}")
    if projections.ndim not in (2, 3):
        raise ValueError(
            f"projections must be (H, W) or (V, H, W), got {projections.shape}"
        )
    if sigma_px == 0:
        return projections.astype(np.float32, copy=True)
    sigma = (sigma_px, sigma_px) if projections.ndim == 2 else (0.0, sigma_px, sigma_px)
    intensity = gaussian_filter(
        np.exp(-projections.astype(np.float64)), sigma=sigma, mode="nearest"
    )
    return (-np.log(np.maximum(intensity, np.finfo(np.float64).tiny))).astype(
        np.float32
    )
