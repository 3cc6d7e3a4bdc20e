"""Scatter out of a film, by a model the user gives.

A film records the primary beam P = exp(-p) plus a smooth halo: X-rays
scattered in the patient and light spread in the detector (glare). Both reach
far across the image, so dense regions (the mediastinum, the spine in a
lateral) read as much thinner than they are; a model trained on views without
it reconstructs them too light. The halo is modelled as a Gaussian blur of
the primary, normalised like the open field:

    m = (P + fraction * G_sigma(P)) / (1 + fraction),

m the measured intensity relative to the open field (1 far from the body,
where both P and its blur are 1). It is taken out of each film on the film's
own pixels, before anything resamples them, as

    P = (1 + fraction) m - fraction * G_sigma(P),

the halo's shape G_sigma(P) computed from m alone: the model is linear in P,
so G_sigma(P) = (1 + fraction) G^ / (1 + fraction * G^) applied to m, G^
(>= 0) the Gaussian's transfer function. The primary is then kept between a
share of what was measured and the open field, and the open field I0 set
again from the primary's brightest pixels (``remove_scatter``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import affine_transform

from ct_pipeline.radiographs.open_field import open_field_level

# With a halo given wider or stronger than the real one, the estimated
# primary could reach zero or below behind dense anatomy. It is kept to at
# least this fraction of what was measured there: at most ln(1 / 0.05) = 3.0
# is added to any line integral, so a halo over 19 times the primary (a
# fraction of 1 behind a mediastinum of p ~ 5) is not taken out whole.
MIN_PRIMARY_FRACTION = 0.05
# The halo is computed on pixels at most sigma / this wide and interpolated
# back (cubic): it varies over sigma, so a film of 0.15 mm pixels needs a grid
# of about a hundred pixels a side, not thousands. On a 600 x 450 film of
# 0.3 / 0.4 mm pixels with a halo of 0.8 / 90 mm (14 pixels a block), this
# leaves line integrals within 0.019 of the full-resolution result behind a
# body of p up to 4.5, 0.034 up to p = 7 (0.03 and 0.06 at sigma / 8), 0.004
# on average: small beside what the halo estimate's finest step changes there
# (a fraction 4.7 % larger moves them by 0.12 on average).
HALO_PIXELS_PER_SIGMA = 16


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


def _block_mean(image: np.ndarray, step: int) -> np.ndarray:
    """``image`` averaged over ``step`` x ``step`` blocks, its last row and
    column repeated to fill the last blocks."""
    rows, cols = (-(-n // step) * step for n in image.shape)
    padded = np.pad(
        image, ((0, rows - image.shape[0]), (0, cols - image.shape[1])), mode="edge"
    )
    return padded.reshape(rows // step, step, cols // step, step).mean(axis=(1, 3))


def halo_of_primary(
    measured: np.ndarray, model: ScatterModel, pixel_mm: tuple[float, float]
) -> np.ndarray:
    """G_sigma(P), the halo's shape, from the measured intensity m alone:
    (1 + fraction) G^ / (1 + fraction * G^) applied to m (the module's
    inverse, blurred). It is as smooth as the halo, so it is computed on
    pixels of at most sigma / HALO_PIXELS_PER_SIGMA (the film's intensities
    averaged over blocks: the halo is linear in intensity) and interpolated
    back, which keeps a film of thousands of pixels a side cheap."""
    sigma_px = [model.sigma_mm / s for s in pixel_mm]
    step = max(1, math.floor(min(sigma_px) / HALO_PIXELS_PER_SIGMA))
    coarse = _block_mean(np.asarray(measured, dtype=np.float64), step)
    sigma_coarse = [s / step for s in sigma_px]
    # Margins of 4 sigma repeating the edge stand in for the film beyond the
    # detector's edge, so that the transform's wrap-around does not mix
    # opposite edges.
    margins = [math.ceil(4 * s) for s in sigma_coarse]
    padded = np.pad(coarse, [(m, m) for m in margins], mode="edge")
    ky = np.fft.fftfreq(padded.shape[0])[:, None]
    kx = np.fft.rfftfreq(padded.shape[1])[None, :]
    transfer = np.exp(
        -2.0 * math.pi**2 * ((sigma_coarse[0] * ky) ** 2 + (sigma_coarse[1] * kx) ** 2)
    )
    halo = np.fft.irfft2(
        (1.0 + model.fraction)
        * transfer
        * np.fft.rfft2(padded)
        / (1.0 + model.fraction * transfer),
        s=padded.shape,
    )
    halo = halo[
        margins[0] : margins[0] + coarse.shape[0],
        margins[1] : margins[1] + coarse.shape[1],
    ]
    if step == 1:
        return halo
    # Fine pixel i sits at (i + 0.5) / step - 0.5 coarse pixels (a block's
    # centre is its mean's) on both axes: a diagonal transform, which scipy
    # interpolates one axis at a time, with no coordinates per pixel.
    return affine_transform(
        halo,
        np.full(2, 1.0 / step),
        offset=0.5 / step - 0.5,
        output_shape=measured.shape,
        order=3,
        mode="nearest",
    )


def remove_scatter(
    p: np.ndarray,
    model: ScatterModel,
    pixel_mm: float | tuple[float, float],
    *,
    open_field_from_primary: bool = False,
) -> np.ndarray:
    """(H, W) line integrals on a detector of ``pixel_mm`` pixels (detector
    plane; one number or (row, col)) with ``model``'s halo taken out: -ln of
    the primary.

    With ``open_field_from_primary`` the open field I0 that ``p`` was taken
    against is only provisional (the film's brightest pixels): it is set
    again as the primary's brightest pixels. The halo a body casts on the
    air beside it keeps the measured open field below what the bare beam
    gives wherever the body fills much of the film, while the primary in air
    is the bare beam itself, halo or not."""
    if model.fraction == 0:
        return p
    # One number (a float or a NumPy scalar) is the spacing of both axes.
    spacing = (
        pixel_mm if isinstance(pixel_mm, tuple) else (float(pixel_mm), float(pixel_mm))
    )
    measured = np.exp(-np.asarray(p, dtype=np.float64))
    primary = (1.0 + model.fraction) * measured - model.fraction * halo_of_primary(
        measured, model, spacing
    )
    # Nothing is taken out where the estimate falls to zero or below.
    primary = np.maximum(primary, MIN_PRIMARY_FRACTION * measured)
    if open_field_from_primary:
        # The inverse is linear in intensity, so a changed I0 only rescales.
        primary = primary / math.exp(open_field_level(np.log(primary)))
    # Nor can it exceed the open field (a halo given too wide or strong
    # overshoots beside the body). The floor above still holds: the new I0
    # rescales what was measured alike.
    return (-np.log(np.minimum(primary, 1.0))).astype(np.asarray(p).dtype)
