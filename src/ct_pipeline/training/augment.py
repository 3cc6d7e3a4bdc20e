"""On-the-fly augmentation: move or mirror the patient, re-render the views.

A training sample is the patient's CT cube turned about the superior axis
(the axis the views rotate about) by a random angle, shifted by a random
offset and, with a given probability, mirrored left-right, with its views
rendered again from the moved cube by the project's own projector, so views
and target always agree exactly (same geometry, angles and mu_water as the
stored DRR set). Patients lie on the table a
little differently every time; 28 phantoms become a stream of new samples.
Rendering 2-8 views of a 32^3 cube takes milliseconds, far below a step.

Turns and sub-voxel shifts resample the cube (bilinear), which blurs the
target a little; the mirror is exact (a flip of the array), so it adds
patients without changing what a voxel of the target looks like.

A DRR set rendered from finer anatomy also holds the views of the mirrored
patient: a draw that only mirrors uses them, so the views keep their detail.

Every draw is seeded by (seed, epoch, patient index), so a run, a resumed
run and every DDP rank see the same samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.drr.physics import hu_to_mu
from ct_pipeline.drr.projector import project
from ct_pipeline.training.detector import detector_response, miscalibrated

AIR_HU = -1000.0
DETECTOR_KEYS = ("photons", "blur_px", "scatter", "gain")
# A system's calibration error: the views' magnification and the isocentre's
# projection on the detector are off by a little.
CALIBRATION_KEYS = ("magnification", "offset_px")
ACQUISITION_KEYS = DETECTOR_KEYS + CALIBRATION_KEYS


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random moves and of the acquisition; all zero is off
    (the stored views are used).

    The acquisition terms make the views look like a real detector's:
    ``photons`` the fewest photons per open-field pixel (quantum noise; each
    view draws log-uniformly up to 100 times more), ``blur_px`` the largest
    scintillator blur (Gaussian sigma, pixels), ``scatter`` the largest
    scatter-to-primary ratio (a smooth halo added to the intensity), ``gain``
    the largest relative error of the flat field (exposure). Each view draws
    its own.

    The calibration terms make the views of a system whose geometry is a
    little off what the model assumes: ``magnification`` the largest relative
    error of the source distances (the image scales about the isocentre's
    projection), ``offset_px`` the largest shift of the isocentre's
    projection on the detector (pixels, along each detector axis).
    """

    rotate_deg: float = 0.0  # uniform in [-rotate_deg, rotate_deg] about superior
    shift_mm: float = 0.0  # uniform in [-shift_mm, shift_mm] along each axis
    mirror: float = 0.0  # probability of mirroring the patient left-right
    photons: float = 0.0
    blur_px: float = 0.0
    scatter: float = 0.0
    gain: float = 0.0
    magnification: float = 0.0
    offset_px: float = 0.0

    def __post_init__(self) -> None:
        for name in ACQUISITION_KEYS + ("rotate_deg", "shift_mm", "mirror"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"train.augment.{name} must be a finite number >= 0, got {value!r}"
                )
            object.__setattr__(self, name, value)
        if self.mirror > 1:
            raise ValueError(
                f"train.augment.mirror is a probability in [0, 1], got {self.mirror!r}"
            )
        for name in ("gain", "magnification"):
            if getattr(self, name) >= 1:
                raise ValueError(
                    f"train.augment.{name} is a relative error below 1, "
                    f"got {getattr(self, name)!r}"
                )

    @property
    def moves(self) -> bool:
        return self.rotate_deg > 0 or self.shift_mm > 0

    @property
    def acquires(self) -> bool:
        return any(getattr(self, name) > 0 for name in ACQUISITION_KEYS)

    @property
    def enabled(self) -> bool:
        return self.moves or self.mirror > 0 or self.acquires

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Augmentation:
        known = {"rotate_deg", "shift_mm", "mirror", *ACQUISITION_KEYS}
        unknown = sorted(set(data or {}) - known)
        if unknown:
            raise ValueError(
                f"unknown train.augment keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**(data or {}))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The RNG of one sample: a function of (seed, epoch, index) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + index)


def move_volume(
    hu: torch.Tensor, grid: CubeGrid, angle_deg: float, shift_mm: torch.Tensor
) -> torch.Tensor:
    """(n, n, n) HU cube on ``grid`` (RAS+ axes i, j, k) turned by ``angle_deg``
    about k through its centre and shifted by ``shift_mm`` (3,); air fills
    what enters.

    Raises:
        ValueError: ``hu`` is not ``grid``'s shape.
    """
    n = grid.size
    if tuple(hu.shape) != (n, n, n):
        raise ValueError(f"hu of shape {tuple(hu.shape)} is not on a {n}^3 grid")
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    # affine_grid's output coordinates are (x, y, z) = (k, j, i) of the cube;
    # theta maps them to the input point: rotate in the (i, j) plane, then
    # shift (normalised units: the cube spans [-1, 1], i.e. n voxels = 2).
    shift = shift_mm.to(torch.float32) / (grid.extent_mm / 2)
    theta = torch.tensor(
        [
            [1.0, 0.0, 0.0, -float(shift[2])],
            [0.0, c, s, -float(shift[1])],
            [0.0, -s, c, -float(shift[0])],
        ],
        dtype=torch.float32,
    )[None]
    sample_at = F.affine_grid(theta, [1, 1, n, n, n], align_corners=False)
    moved = F.grid_sample(
        (hu - AIR_HU)[None, None], sample_at, mode="bilinear", align_corners=False
    )
    return moved[0, 0] + AIR_HU


def augmented_sample(
    hu: torch.Tensor,
    grid: CubeGrid,
    geometry: Geometry,
    angles_deg: list[float],
    mu_water_per_mm: float,
    augmentation: Augmentation,
    generator: torch.Generator,
    stored_views: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(views (V, H, W) line integrals, moved HU cube (n, n, n)) of one random
    move of ``hu``, the patient's cube on ``grid``.

    ``stored_views`` (views, mirrored views), when the DRR set holds both,
    serve a draw that only mirrors: they were rendered from the patient's
    finer anatomy, which the cube cannot reproduce.
    """
    angle = (
        torch.rand((), generator=generator).item() * 2 - 1
    ) * augmentation.rotate_deg
    shift = (torch.rand(3, generator=generator) * 2 - 1) * augmentation.shift_mm
    mirrored = torch.rand((), generator=generator).item() < augmentation.mirror
    moved = move_volume(hu, grid, angle, shift) if augmentation.moves else hu
    if mirrored:
        # Array axis i is R (RAS+); the cube's centre, the isocentre, stays put.
        moved = moved.flip(0)
    if stored_views is not None and not augmentation.moves:
        views = stored_views[1 if mirrored else 0]
        return acquired(views, augmentation, generator), moved
    # The isocentre is the cube's centre, as in the DRR stage.
    isocentre = np.asarray(grid.centre_mm)
    with torch.no_grad():
        views = project(
            hu_to_mu(moved, mu_water_per_mm),
            grid.affine,
            geometry,
            angles_deg,
            isocentre,
        )
    return acquired(views, augmentation, generator), moved


def acquired(
    views: torch.Tensor, augmentation: Augmentation, generator: torch.Generator
) -> torch.Tensor:
    """(V, H, W) line integrals as a real system would report them: its
    calibration a little off (``miscalibrated``) and its detector's response
    (``detector_response``), each view drawing its own amounts up to
    ``augmentation``'s. Unchanged when the acquisition terms are off."""
    if not augmentation.acquires:
        return views
    count = views.shape[0]
    if augmentation.magnification > 0 or augmentation.offset_px > 0:
        scale = 1.0 + (2 * torch.rand(count, generator=generator) - 1) * (
            augmentation.magnification
        )
        offset = (2 * torch.rand(count, 2, generator=generator) - 1) * (
            augmentation.offset_px
        )
        views = miscalibrated(views, scale, offset)
        if not any(getattr(augmentation, name) > 0 for name in DETECTOR_KEYS):
            return views

    def draw(high: float) -> torch.Tensor:
        return torch.rand(count, generator=generator) * high

    scatter = draw(augmentation.scatter)
    blur_px = draw(augmentation.blur_px)
    gain = 1.0 + (2 * torch.rand(count, generator=generator) - 1) * augmentation.gain
    photons = (
        augmentation.photons * 100.0 ** torch.rand(count, generator=generator)
        if augmentation.photons > 0
        else None
    )
    return detector_response(views, scatter, blur_px, gain, photons, generator)
