"""The training-set mean volume: the baseline every model must beat."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def mean_volume(volumes_unit: Iterable[np.ndarray]) -> np.ndarray:
    """Voxel-wise mean of the training volumes (in [0, 1] space), float32.

    Streams: only the running sum is held, so ``volumes_unit`` may be a
    generator that loads one volume at a time. Accumulates in float64 so that
    hundreds of float32 volumes add without rounding drift.
    """
    total: np.ndarray | None = None
    count = 0
    for volume in volumes_unit:
        volume = np.asarray(volume)
        if total is None:
            if volume.ndim != 3:
                raise ValueError(f"expected 3-D volumes, got shape {volume.shape}")
            total = np.zeros(volume.shape, dtype=np.float64)
        elif volume.shape != total.shape:
            raise ValueError(
                f"all volumes must share one shape: expected {total.shape}, "
                f"got {volume.shape} (volume {count})"
            )
        total += volume
        count += 1
    if total is None:
        raise ValueError("mean_volume needs at least one volume, got none")
    return (total / count).astype(np.float32)
