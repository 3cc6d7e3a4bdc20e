"""Resample a CT onto the isotropic cube the models see.

Resampling and cropping are one step: the output grid is a cube of
``volume_size`` voxels at ``target_spacing_mm``, axis-aligned RAS+, centred on
the body, and every output voxel samples the input at the same world point
(trilinear). The output affine is therefore exact, oblique inputs included,
and a prediction saved with it overlays the original CT.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.io import AIR_HU
from ct_pipeline.ct.volume import CTVolume

logger = logging.getLogger(__name__)


def preprocess_ct(
    ct: CTVolume,
    target_spacing_mm: float,
    volume_size: int,
    body_threshold_hu: float = -500.0,
) -> CTVolume:
    """Return the ``volume_size``^3 cube at ``target_spacing_mm`` centred on the body.

    Voxels outside the input are air.

    Args:
        ct: Input volume in HU, any spacing.
        target_spacing_mm: Isotropic output spacing, > 0.
        volume_size: Voxels per side of the output cube, >= 1.
        body_threshold_hu: The body is HU above this; the cube centres on its
            bounding box (on the volume centre when nothing is above it).

    Raises:
        ValueError: ``target_spacing_mm`` or ``volume_size`` is out of range.
    """
    if target_spacing_mm <= 0:
        raise ValueError(f"target_spacing_mm must be > 0, got {target_spacing_mm}")
    if volume_size < 1:
        raise ValueError(f"volume_size must be >= 1, got {volume_size}")
    centre = body_centre_mm(ct, body_threshold_hu)
    return resample_to_grid(ct, CubeGrid(volume_size, target_spacing_mm, tuple(centre)))


def resample_to_grid(ct: CTVolume, grid: CubeGrid) -> CTVolume:
    """``ct`` sampled (trilinear, anti-aliased when shrinking) at every voxel
    centre of ``grid``; air outside the input."""
    out_affine = grid.affine
    # Output voxel -> input voxel: inv(A_in) @ A_out, affine in index space.
    out_to_in = np.linalg.solve(ct.affine, out_affine)
    source, out_to_in = _antialiased_source(ct, out_to_in, grid.size, grid.spacing_mm)
    hu = ndimage.affine_transform(
        source,
        out_to_in[:3, :3],
        offset=out_to_in[:3, 3],
        output_shape=(grid.size,) * 3,
        output=np.float32,
        order=1,
        mode="constant",
        cval=AIR_HU,
    )
    return CTVolume(hu=hu, affine=out_affine)


def finer_grid(grid: CubeGrid, factor: int) -> CubeGrid:
    """The same field as ``grid`` (same centre, same outer faces) in voxels
    ``factor`` times smaller: the anatomy that views of a real patient see."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(
            f"the oversampling factor must be an integer >= 1, got {factor!r}"
        )
    return CubeGrid(grid.size * factor, grid.spacing_mm / factor, grid.centre_mm)


def body_centre_mm(ct: CTVolume, threshold_hu: float) -> np.ndarray:
    """World centre (RAS+ mm) of the bounding box of voxels above ``threshold_hu``."""
    body = ct.hu > threshold_hu
    if not body.any():
        logger.warning(
            "no voxel above %g HU; centring on the volume centre", threshold_hu
        )
        return ct.centre_mm
    bounds = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(body.any(axis=others))
        bounds.append((occupied[0] + occupied[-1]) / 2.0)
    centre_index = np.asarray(bounds)
    return ct.affine[:3, :3] @ centre_index + ct.affine[:3, 3]


def _antialiased_source(
    ct: CTVolume, out_to_in: np.ndarray, size: int, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the input to what the output grid touches and low-pass it when shrinking.

    Trilinear sampling of a finer grid aliases noise and thin bone; a Gaussian
    of sigma (factor - 1) / 2 input voxels per axis (scikit-image's rule) first
    removes what the coarser grid cannot hold. Returns the source array and the
    output -> source index transform.
    """
    factors = spacing_mm / np.asarray(ct.spacing_mm)
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    corners = np.array(np.meshgrid(*[[0, size - 1]] * 3, indexing="ij")).reshape(3, -1)
    touched = out_to_in[:3, :3] @ corners + out_to_in[:3, 3:4]
    margin = np.ceil(4.0 * sigma) + 2
    shape = np.asarray(ct.hu.shape)
    wanted_start = np.floor(touched.min(axis=1) - margin).astype(int)
    wanted_stop = (np.ceil(touched.max(axis=1) + margin) + 1).astype(int)
    start = np.clip(wanted_start, 0, shape)
    stop = np.clip(wanted_stop, 0, shape)
    if np.any(stop <= start):  # the output cube misses the input: all air
        return np.full((1, 1, 1), AIR_HU, dtype=np.float32), out_to_in
    source = ct.hu[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    if np.any(sigma > 0):
        # Where the scan ends inside the cube, what lies beyond is air (as the
        # views of the scan see it): pad it before the low-pass, so a voxel
        # straddling the scan's end holds its share of air, not the edge
        # tissue repeated. Elsewhere the crop's edges are real data ('nearest').
        pad = np.stack(
            [
                np.minimum(start - wanted_start, margin),
                np.minimum(wanted_stop - stop, margin),
            ],
            axis=1,
        ).astype(int)
        source = np.pad(source, pad, mode="constant", constant_values=AIR_HU)
        start = start - pad[:, 0]
        source = ndimage.gaussian_filter(
            source, sigma=sigma, mode="nearest", truncate=3.0
        )
    shifted = out_to_in.copy()
    shifted[:3, 3] -= start
    return np.ascontiguousarray(source, dtype=np.float32), shifted
