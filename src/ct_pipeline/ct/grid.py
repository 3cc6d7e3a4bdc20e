"""The cube grid: the one definition of the volume the network sees.

``size``^3 voxels at ``spacing_mm``, axis-aligned RAS+ (i -> R, j -> A,
k -> S), centred on ``centre_mm``. Preprocessing resamples every CT onto one,
phantoms are drawn on one, the lifting samples the views at its voxel centres
and a prediction is written with its affine, so they overlay by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ct_pipeline.ct.volume import CTVolume

ORIGIN_MM = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CubeGrid:
    """An isotropic, axis-aligned cube of voxels (RAS+ mm)."""

    size: int
    spacing_mm: float
    centre_mm: tuple[float, float, float] = ORIGIN_MM

    def __post_init__(self) -> None:
        if self.size < 1 or not self.spacing_mm > 0:
            raise ValueError(
                f"a cube grid needs size >= 1 and spacing_mm > 0, got "
                f"{self.size} and {self.spacing_mm}"
            )
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "spacing_mm", float(self.spacing_mm))
        object.__setattr__(
            self, "centre_mm", tuple(float(c) for c in np.ravel(self.centre_mm))
        )
        if len(self.centre_mm) != 3:
            raise ValueError(f"centre_mm must be 3 numbers, got {self.centre_mm}")

    @classmethod
    def of(cls, volume: CTVolume, name: str = "the volume") -> CubeGrid:
        """The grid ``volume`` lies on; raises, naming it, if that is no cube grid."""
        shape, spacing = volume.hu.shape, volume.spacing_mm
        if len(set(shape)) != 1:
            raise ValueError(f"{name} must be a cube, got shape {shape}")
        if not np.allclose(spacing, spacing[0], rtol=1e-4):
            raise ValueError(f"{name} must have isotropic spacing, got {spacing} mm")
        grid = cls(shape[0], spacing[0], tuple(volume.centre_mm))
        if not np.allclose(volume.affine, grid.affine, atol=1e-4 * spacing[0]):
            raise ValueError(f"{name} is not axis-aligned RAS+: affine {volume.affine}")
        return grid

    def centred(self, centre_mm: Sequence[float] | np.ndarray) -> CubeGrid:
        """The same cube moved to ``centre_mm``."""
        return CubeGrid(self.size, self.spacing_mm, tuple(np.ravel(centre_mm)))

    def coarsened(self, factor: int) -> CubeGrid:
        """The same cube in ``factor``^3 blocks of voxels: size / factor voxels
        at factor times the spacing, so the field and the centre stay."""
        if factor < 1 or self.size % factor:
            raise ValueError(
                f"a {self.size}^3 grid cannot be cut into blocks of {factor} voxels"
            )
        return CubeGrid(self.size // factor, self.spacing_mm * factor, self.centre_mm)

    @property
    def extent_mm(self) -> float:
        """Side length of the cube, outer voxel faces included."""
        return self.size * self.spacing_mm

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel index -> RAS+ mm."""
        affine = np.diag([self.spacing_mm] * 3 + [1.0])
        affine[:3, 3] = np.asarray(self.centre_mm) - self.axis_half_mm
        return affine

    @property
    def axis_half_mm(self) -> float:
        """Distance from the centre to the outermost voxel centres."""
        return self.spacing_mm * (self.size - 1) / 2.0

    def axis_mm(self) -> np.ndarray:
        """Voxel-centre offsets from the centre along any axis (float64)."""
        return (np.arange(self.size) - (self.size - 1) / 2.0) * self.spacing_mm

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "spacing_mm": self.spacing_mm,
            "centre_mm": list(self.centre_mm),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CubeGrid:
        return cls(
            int(data["size"]),
            float(data["spacing_mm"]),
            tuple(data.get("centre_mm", ORIGIN_MM)),
        )
