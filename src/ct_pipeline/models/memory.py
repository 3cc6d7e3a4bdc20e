"""Activation checkpointing for big volumes (the ``medical`` config at 128^3).

One switch trades compute for memory: the lifting samples its views a chunk
of voxels at a time and recomputes each chunk in the backward pass, and every
3-D U-Net block recomputes its activations instead of keeping them. The
weights and the numbers are those of the plain model (tested); a step costs
about one extra forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ct_pipeline.models.cascade import CorrectionUNet
from ct_pipeline.models.lifting import GeometricLifting
from ct_pipeline.models.unet3d import UNet3d

# Voxels per lifting chunk: at 128^3 with 8 views of 65 channels a chunk's
# samples are ~0.5 GB in fp32 instead of 4.4 GB for the whole cube.
LIFT_CHUNK_VOXELS = 2**18


def _recomputed(forward: Callable[..., Any], module: nn.Module) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        if module.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False)
        return forward(*args)

    return run


def enable_activation_checkpointing(
    model: nn.Module, lift_chunk_voxels: int = LIFT_CHUNK_VOXELS
) -> nn.Module:
    """Switch ``model`` (a ReconstructionNet, or a schedule's chain of them
    and their corrections) to chunked lifting and recomputed U-Net blocks.

    In place; returns the model. The state dict is unchanged (the blocks'
    forward is wrapped, not the blocks), so bundles and checkpoints load the
    same either way.
    """
    blocks: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, GeometricLifting):
            module.chunk_voxels = lift_chunk_voxels
        elif isinstance(module, UNet3d):
            blocks += [*module.encoders, *module.decoders]
        elif isinstance(module, CorrectionUNet):
            blocks += module.blocks()
    for block in blocks:
        block.forward = _recomputed(block.forward, block)
    return model
