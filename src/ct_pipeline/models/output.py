"""The networks' output: its range (the [0, 1] unit of the HU window) and its keys."""

from __future__ import annotations

from typing import TypedDict

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


class ModelOutput(TypedDict):
    """What every network returns (a plain dict at run time, so DDP, compile
    and TorchScript-free serving see ordinary containers)."""

    volume: torch.Tensor  # (B, 1, N, N, N) in [0, 1]
    deep: list[torch.Tensor]  # the coarser levels' volumes, for deep supervision
    attention: dict[str, torch.Tensor | None] | None  # per module, on request
