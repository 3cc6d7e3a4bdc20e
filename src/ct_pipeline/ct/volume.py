"""The in-memory CT volume shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CTVolume:
    """A CT volume in Hounsfield units on a RAS+ voxel grid.

    Array axes follow the project convention: i -> Right, j -> Anterior,
    k -> Superior. ``affine`` maps voxel indices (i, j, k, 1) to RAS+ mm.
    """

    hu: np.ndarray  # (I, J, K) float32
    affine: np.ndarray  # (4, 4) float64
    # Where the volume came from, written into the NIfTI header's 80-byte
    # ``descrip`` field (e.g. which model reconstructed it); "" for a scan.
    description: str = ""

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be 3-D, got shape {self.hu.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"CTVolume.affine must be 4x4, got {self.affine.shape}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k: the column norms of the affine's 3x3 part."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def centre_mm(self) -> np.ndarray:
        """World position (RAS+ mm) of the volume centre, the DRR isocentre."""
        centre_index = (np.asarray(self.hu.shape, dtype=np.float64) - 1.0) / 2.0
        return self.affine[:3, :3] @ centre_index + self.affine[:3, 3]
