"""The networks' output range: the [0, 1] unit of the HU window."""

from __future__ import annotations

import torch


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] in the forward pass, identity gradient in the backward pass.

    Half of a chest cube is air, exactly 0 after HU scaling. A sigmoid only
    approaches 0, with a vanishing gradient, so air stayed ~150 HU too bright
    and capped PSNR; a plain clamp would stop the gradient of voxels pushed
    out of range. The straight-through clamp reaches 0 and 1 exactly and keeps
    every voxel trainable.
    """
    return x + (x.clamp(0.0, 1.0) - x).detach()
