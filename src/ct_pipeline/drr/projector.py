"""Ray-integral projector: DRRs as line integrals of mu.

Method: Joseph's slice-interpolation projector. Each ray is stepped one voxel
slice at a time along its dominant index axis (the one it crosses fastest);
at every slice the volume is interpolated bilinearly in the two other axes
and weighted by the ray length per slice. Compared with exact Siddon
intersection lengths it needs no per-ray sort of plane crossings, so a whole
chunk of rays becomes one batched ``grid_sample`` call (slices as the batch),
which is fast on CPU and GPU and differentiable w.r.t. mu. Slice centres fall
on voxel centres, so the path through voxel-aligned faces across the
dominant axis is counted exactly; the transverse interpolation smooths the
other faces over one voxel without changing the integral to first order.
The closed-form tests in tests/drr hold it under 0.5 % error.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.geometry import Geometry, rays
from ct_pipeline.drr.physics import add_poisson_noise, detector_blur, hu_to_mu

logger = logging.getLogger(__name__)

# Samples (slices x rays) per grid_sample call: bounds the grid, output and
# mask tensors to ~16 MB each whatever the detector size.
_SAMPLES_PER_CHUNK = 1 << 22
_RAYS_PER_GROUP = 1 << 20


def _check_affine(
    affine: np.ndarray | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spacing (3,) and origin (3,) of a RAS+ canonical (diagonal-positive) affine."""
    a = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {tuple(a.shape)}")
    linear = a[:3, :3]
    spacing = torch.diagonal(linear)
    off_diagonal = linear - torch.diag(spacing)
    if bool((spacing <= 0).any()) or float(off_diagonal.abs().max()) > 1e-6 * float(
        spacing.max()
    ):
        raise ValueError(
            "projector needs a RAS+ canonical affine (diagonal, positive spacing); "
            f"got 3x3 part {linear.tolist()}; reorient with nibabel.as_closest_canonical "
            "and resample first"
        )
    return spacing, a[:3, 3]


def _joseph(
    slabs: torch.Tensor,
    axis: int,
    start: torch.Tensor,
    step: torch.Tensor,
    mm_per_t: torch.Tensor,
) -> torch.Tensor:
    """Line integrals of rays whose dominant index axis is ``axis``.

    slabs: mu with ``axis`` first and the other two in order, (N, P, Q).
    start, step: (R, 3) ray origin and (end - origin) in voxel index units,
    float32 on mu's device; mm_per_t: (R,) ray length in mm.
    """
    others = [a for a in range(3) if a != axis]
    n, p, q = slabs.shape
    # The ray meets slice s at t = (s - start_axis) / step_axis; its transverse
    # index there is affine in s, and so is its grid_sample coordinate, where
    # align_corners=False puts index i at (2 i + 1) / n - 1 and reads zeros
    # beyond the outer voxel faces: the volume is empty outside its box.
    t0 = -start[:, axis] / step[:, axis]  # (R,) t at slice 0
    dt = 1.0 / step[:, axis]  # (R,) t per slice
    sizes = torch.tensor([q, p], dtype=start.dtype, device=start.device)
    transverse = [others[1], others[0]]  # grid order is (x = Q, y = P)
    base = (
        2 * (start[:, transverse] + t0[:, None] * step[:, transverse]) + 1
    ) / sizes - 1
    slope = 2 * dt[:, None] * step[:, transverse] / sizes  # (R, 2)
    slices = torch.arange(n, dtype=start.dtype, device=start.device)
    grid = torch.addcmul(base[None], slices[:, None, None], slope[None])  # (N, R, 2)
    samples = F.grid_sample(
        slabs[:, None],
        grid[:, None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )[:, 0, 0]  # (N, R)
    # The segment runs source -> pixel only; sources and detectors normally
    # lie outside the volume, so the mask is built only when one does not.
    t_first, t_last = t0, t0 + (n - 1) * dt
    if bool(
        (
            (torch.minimum(t_first, t_last) < 0) | (torch.maximum(t_first, t_last) > 1)
        ).any()
    ):
        t = t0 + slices[:, None] * dt  # (N, R)
        samples = samples * ((t >= 0) & (t <= 1))
    per_slice = mm_per_t * dt.abs()  # mm of ray per slice
    return samples.sum(dim=0) * per_slice


def project(
    mu: torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    geometry: Geometry,
    angles_deg: torch.Tensor | np.ndarray | list[float],
    isocentre_mm: torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """Line integrals of ``mu`` along every ray: (V, H, W).

    Runs on mu's device and dtype float32; differentiable w.r.t. ``mu``.

    Args:
        mu: Attenuation (I, J, K) in 1/mm.
        affine: 4x4 voxel index -> RAS+ mm; must be diagonal-positive.
        geometry: Source, detector and beam of the views.
        angles_deg: One gantry angle per view (V of them).
        isocentre_mm: RAS+ point (3,) the gantry turns about.

    Raises:
        ValueError: ``mu`` is not 3-D or ``affine`` is not diagonal-positive.
    """
    if mu.ndim != 3:
        raise ValueError(f"mu must be (I, J, K), got shape {tuple(mu.shape)}")
    spacing, origin = _check_affine(affine)
    angles = torch.as_tensor(np.asarray(angles_deg, dtype=np.float64)).reshape(-1)
    iso = torch.as_tensor(np.asarray(isocentre_mm, dtype=np.float64)).reshape(3)
    mu = mu.to(torch.float32)
    device = mu.device
    rows, cols = geometry.detector_px
    rays_per_chunk = max(1, _SAMPLES_PER_CHUNK // max(mu.shape))
    # Views are traced together (fewer, larger kernel calls) in groups that
    # keep the float64 ray end points to ~50 MB.
    views_per_group = max(1, _RAYS_PER_GROUP // (rows * cols))
    slabs: dict[int, torch.Tensor] = {}

    images = []
    for first_view in range(0, angles.numel(), views_per_group):
        group = angles[first_view : first_view + views_per_group]
        origin_mm, end_mm = rays(geometry, group, iso)  # (G, H, W, 3) each
        origin_mm, end_mm = origin_mm.reshape(-1, 3), end_mm.reshape(-1, 3)
        start = ((origin_mm - origin) / spacing).to(torch.float32)
        step = ((end_mm - origin_mm) / spacing).to(torch.float32)
        length_mm = (end_mm - origin_mm).norm(dim=-1).to(torch.float32)
        # Physical steps per index unit differ per axis: the dominant axis is
        # the one with the most slices crossed, i.e. the largest |step|.
        dominant = step.abs().argmax(dim=-1)
        image = torch.zeros(start.shape[0], dtype=torch.float32, device=device)
        for axis in range(3):
            index = torch.nonzero(dominant == axis).flatten()
            if index.numel() and axis not in slabs:
                others = [a for a in range(3) if a != axis]
                slabs[axis] = mu.permute(axis, *others).contiguous()  # (N, P, Q)
            for first in range(0, index.numel(), rays_per_chunk):
                chunk = index[first : first + rays_per_chunk]
                values = _joseph(
                    slabs[axis],
                    axis,
                    start[chunk].to(device),
                    step[chunk].to(device),
                    length_mm[chunk].to(device),
                )
                image = image.index_put((chunk.to(device),), values)
        images.append(image.reshape(-1, rows, cols))
    return torch.cat(images)


def render_drrs(
    ct: CTVolume,
    geometry: Geometry,
    angles_deg: list[float] | np.ndarray,
    mu_water_per_mm: float = 0.02,
    device: str | torch.device | None = None,
    *,
    photons_per_pixel: float | None = None,
    blur_sigma_px: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """DRRs of a CT: (V, H, W) float32 line integrals, isocentre at its centre.

    Realism is off by default (see physics.py for the noise and blur models).

    Args:
        ct: Volume in HU with its affine.
        geometry: Source, detector and beam of the views.
        angles_deg: One gantry angle per view.
        mu_water_per_mm: Attenuation of water, which scales HU to 1/mm.
        device: Where to trace the rays; None keeps the CPU.
        photons_per_pixel: Adds seeded Poisson noise at this dose; None adds none.
        blur_sigma_px: Gaussian detector blur in pixels; 0 adds none.
        seed: Seed of the Poisson noise.
    """
    mu = hu_to_mu(
        torch.from_numpy(np.ascontiguousarray(ct.hu, dtype=np.float32)), mu_water_per_mm
    )
    if device is not None:
        mu = mu.to(device)
    logger.debug("rendering %d views of a %s volume", len(angles_deg), tuple(mu.shape))
    with torch.no_grad():
        images = project(mu, ct.affine, geometry, angles_deg, ct.centre_mm)
    projections = images.cpu().numpy()
    if photons_per_pixel is not None:
        projections = add_poisson_noise(projections, photons_per_pixel, seed)
    if blur_sigma_px > 0:
        # Light spreads in the scintillator after the photons were counted.
        projections = detector_blur(projections, blur_sigma_px)
    return projections
