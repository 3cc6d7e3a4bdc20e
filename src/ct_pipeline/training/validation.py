"""Validation during training: mean PSNR3D / SSIM3D over the val split."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ct_pipeline.metrics import psnr_3d, ssim_3d
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.distributed import all_reduce
from ct_pipeline.training.job import Place


def validate(
    model: nn.Module,
    val_set: ReconstructionDataset,
    angles: torch.Tensor,
    config: TrainConfig,
    place: Place,
    autocast: Callable[[], Any],
) -> tuple[float, float]:
    """Mean psnr_3d / ssim_3d over the val split: each rank scores a shard, sums are all-reduced."""
    model.eval()
    device = place.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # psnr, ssim, count
    shard = list(range(place.rank, len(val_set), place.world_size))
    with torch.no_grad():
        for batch in _batches(shard, config.batch_size_per_device):
            views = torch.stack([val_set[i][0] for i in batch]).to(device)
            target = torch.stack([val_set[i][1] for i in batch]).to(device)
            with autocast():
                prediction = model(views, angles)["volume"].float()
            for pred, true in zip(prediction, target, strict=True):
                sums[0] += psnr_3d(pred, true)
            sums[1] += ssim_3d(prediction, target).double().sum()
            sums[2] += len(batch)
    all_reduce(sums)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _batches(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]
