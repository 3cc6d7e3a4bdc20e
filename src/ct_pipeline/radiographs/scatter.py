"""Scatter out of a film's views, by a model the user gives.

A film records the primary beam P = exp(-p) plus a smooth halo: X-rays
scattered in the patient and light spread in the detector (glare). Both reach
far across the image, so dense regions (the mediastinum, the spine in a
lateral) read as much thinner than they are; a model trained on views without
it reconstructs them too light. The halo is modelled as a Gaussian blur of
the image itself, normalised like the open field:

    m = (P + fraction * G_sigma(P)) / (1 + fraction),

m the measured intensity relative to the open field (1 far from the body,
where both P and its blur are 1). This is linear in P, so it is inverted
exactly, frequency by frequency: P = (1 + fraction) m / (1 + fraction * G^),
G^ (>= 0) the Gaussian's transfer function. The denominator is at least 1, so
the inverse never amplifies noise more than (1 + fraction) times.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ct_pipeline.drr import DRRSet

# With a halo given wider or stronger than the real one, the estimated
# primary could reach zero or below behind dense anatomy. It is kept to at
# least this fraction of what was measured there: at most ln(1 / 0.05) = 3.0
# is added to any line integral, so a halo over 19 times the primary (a
# fraction of 1 behind a mediastinum of p ~ 5) is not taken out whole.
MIN_PRIMARY_FRACTION = 0.05


@dataclass(frozen=True)
class ScatterModel:
    """The halo a film system adds, to be taken out of its films.

    Args:
        fraction: The halo's share relative to the primary in the open field
            (0 for none; about 0.3-1 for a chest film with an anti-scatter
            grid, more without one), >= 0.
        sigma_mm: Width (Gaussian sigma) of the halo in the detector plane, mm,
            > 0.

    Raises:
        ValueError: A field is out of range.
    """

    fraction: float = 0.0
    sigma_mm: float = 72.0

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, int | float) and self.fraction >= 0):
            raise ValueError(
                f"radiographs.scatter.fraction must be a number >= 0, got {self.fraction!r}"
            )
        if not (isinstance(self.sigma_mm, int | float) and self.sigma_mm > 0):
            raise ValueError(
                f"radiographs.scatter.sigma_mm must be a number > 0, got {self.sigma_mm!r}"
            )


# Films taken as they are: nothing removed.
NO_SCATTER = ScatterModel()


def remove_scatter(p: np.ndarray, model: ScatterModel, pixel_mm: float) -> np.ndarray:
    """(H, W) line integrals on a detector of ``pixel_mm`` pixels (detector
    plane) with ``model``'s halo taken out: -ln of the primary."""
    if model.fraction == 0:
        return p
    measured = np.exp(-np.asarray(p, dtype=np.float64))
    sigma_px = model.sigma_mm / pixel_mm
    # Margins of 4 sigma repeating the edge stand in for the film beyond the
    # detector's edge, so that the transform's wrap-around does not mix
    # opposite edges.
    margin = math.ceil(4 * sigma_px)
    padded = np.pad(measured, margin, mode="edge")
    ky = np.fft.fftfreq(padded.shape[0])[:, None]
    kx = np.fft.rfftfreq(padded.shape[1])[None, :]
    transfer = np.exp(-2.0 * math.pi**2 * sigma_px**2 * (ky**2 + kx**2))
    primary = np.fft.irfft2(
        (1.0 + model.fraction)
        * np.fft.rfft2(padded)
        / (1.0 + model.fraction * transfer),
        s=padded.shape,
    )
    inner = primary[margin : margin + p.shape[0], margin : margin + p.shape[1]]
    # Nor can it exceed the open field (a halo given too wide or strong
    # overshoots beside the body).
    kept = np.clip(inner, MIN_PRIMARY_FRACTION * measured, 1.0)
    return (-np.log(kept)).astype(np.asarray(p).dtype)


def without_scatter(views: DRRSet, model: ScatterModel) -> DRRSet:
    """``views`` (line integrals on their geometry's detector) with ``model``'s
    halo taken out of each."""
    projections = np.stack(
        [remove_scatter(p, model, views.geometry.pixel_mm) for p in views.projections]
    )
    return dataclasses.replace(views, projections=projections)
