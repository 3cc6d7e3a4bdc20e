"""What one rank trains with: data, model, loss, optimiser and schedule,
built in a fixed order (the initial weights depend on it) for one stage of
the resolution schedule, then wrapped for DDP and compilation."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler

from ct_pipeline.models.memory import enable_activation_checkpointing
from ct_pipeline.training.adversarial import Adversary, build_adversary
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.job import Place, TrainJob
from ct_pipeline.training.resolution import schedule_stages
from ct_pipeline.training.stages import stage_network

Sample = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Parts:
    """The objects a rank's training loop works on (weights unwrapped), at
    one stage of the resolution schedule."""

    binning: int  # voxels (and detector pixels) per side of the data making one
    train_set: ReconstructionDataset
    val_set: ReconstructionDataset
    sampler: DistributedSampler[Sample]
    loader: DataLoader[Sample]
    angles: torch.Tensor
    micro_per_epoch: int  # micro-batches an epoch
    steps_per_epoch: int  # optimiser steps an epoch
    module: nn.Module
    loss_fn: nn.Module
    adversary: Adversary | None
    optimizer: torch.optim.AdamW
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]


def build_parts(job: TrainJob, place: Place, binning: int) -> Parts:
    config, device = job.config, place.device
    amp = config.resolve_amp(device.type)
    amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp != "off")

    train_set = ReconstructionDataset(
        job.volumes,
        job.drr_sets,
        job.split["train"],
        config.angles,
        config.hu_window,
        Augmentation.from_dict(config.augment),
        config.seed,
        binning,
    )
    val_set = ReconstructionDataset(
        job.volumes,
        job.drr_sets,
        job.split["val"],
        config.angles,
        config.hu_window,
        binning=binning,
    )
    # Shuffled with seed + epoch on every rank: rank r takes every world_size-th
    # index of one shared permutation, so at each step the ranks together see
    # exactly the samples a single process with the global batch would.
    sampler: DistributedSampler[Sample] = DistributedSampler(
        train_set,
        num_replicas=place.world_size,
        rank=place.rank,
        shuffle=True,
        seed=config.seed,
    )
    # Workers are started afresh each epoch (not persistent), so they see the
    # epoch set on the data set, which seeds its augmentation.
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size_per_device,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if config.num_workers else None,
    )
    micro_per_epoch = len(loader)
    if config.steps_per_epoch is not None:
        micro_per_epoch = min(
            micro_per_epoch, config.steps_per_epoch * config.grad_accum_steps
        )
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)

    # Identical initial weights on every rank and run. Seeded again at every
    # stage, entered by a switch or by a resume: a correction entered by a
    # switch starts from the same weights as in a run that was never
    # interrupted, and a resume replaces them all. The global generator draws
    # only initial weights and the loader's worker seeds, which nothing uses;
    # shuffling and augmentation have their own.
    torch.manual_seed(config.seed)
    geometry, grid = train_set.sample_geometry, train_set.sample_grid
    module = stage_network(config, job.model_factory, geometry, grid, binning)
    module = module.to(device)
    if config.activation_checkpointing:
        enable_activation_checkpointing(module)
    loss_fn = job.loss_factory(config).to(device)
    # adversarial: None unless loss_weights.adversarial > 0 (built after the
    # generator, so the generator's initial weights never depend on it).
    adversary = build_adversary(config, geometry, grid, place)
    # Fused: one kernel over all parameters instead of a loop over ~260
    # tensors (CPU and CUDA alike); 6.7 -> 1.8 ms a step for `small` on CPU.
    # Only the stage's own weights: a later stage's coarse network is frozen.
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=True,
    )
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    stages = schedule_stages(config.resolution_schedule, config.epochs)
    scheduler = LambdaLR(
        optimizer,
        warmup_cosine(
            warmup_steps, [stage.epochs * steps_per_epoch for stage in stages]
        ),
    )
    return Parts(
        binning=binning,
        train_set=train_set,
        val_set=val_set,
        sampler=sampler,
        loader=loader,
        angles=train_set.angles_tensor().to(device),
        micro_per_epoch=micro_per_epoch,
        steps_per_epoch=steps_per_epoch,
        module=module,
        loss_fn=loss_fn,
        adversary=adversary,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
        autocast=autocast,
    )


def wrap(
    module: nn.Module, compile_model: bool, place: Place
) -> tuple[nn.Module, DistributedDataParallel | None]:
    """The module as the steps call it (DDP, then compiled), and the DDP wrapper."""
    model, ddp = module, None
    if place.distributed:
        device = place.device
        ddp = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = ddp
    if compile_model:
        # Around DDP, so that its graph breaks at the gradient buckets; the
        # weights stay those of ``module`` (saved, validated, returned).
        # Static shapes: a training run has one batch shape (the last, smaller
        # batch recompiles once); dynamic shapes failed in Inductor on this model.
        model = cast(nn.Module, torch.compile(model, dynamic=False))
    return model, ddp


def warmup_cosine(
    warmup_steps: int, stage_steps: Sequence[int]
) -> Callable[[int], float]:
    """LR factor per optimiser step: in each stage of ``stage_steps`` steps
    (one without a resolution schedule), a linear warm-up to 1 over
    ``warmup_steps`` (at most half of a stage of a schedule), then half a
    cosine to 0.

    Each stage of a resolution schedule gets its own cycle: a stage's
    correction starts at zero with a fresh Adam state and has everything to
    learn, which the tail of one cosine over every epoch, near 0, would not
    let it do."""
    starts = [sum(stage_steps[:i]) for i in range(len(stage_steps))]
    warmups = [
        warmup_steps if len(stage_steps) == 1 else min(warmup_steps, steps // 2)
        for steps in stage_steps
    ]

    def factor(step: int) -> float:
        index = sum(1 for start in starts[1:] if start <= step)
        local, total = step - starts[index], stage_steps[index]
        warmup = warmups[index]
        if local < warmup:
            return (local + 1) / warmup
        progress = (local - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def data_signature(
    train_set: ReconstructionDataset,
    split: Mapping[str, list[str]],
    dataset_id: str | None,
) -> dict[str, Any]:
    """What the weights were trained on, for the checkpoint folder's identity:
    the data set's own grid and detector, whatever the stage."""
    signature: dict[str, Any] = {
        "volume_size": train_set.grid.size,
        "spacing_mm": round(train_set.grid.spacing_mm, 6),
        "geometry": train_set.geometry.to_dict(),
        "train": sorted(split["train"]),
        "val": sorted(split["val"]),
    }
    if train_set.anatomy_spacing_mm is not None:
        # Absent for views of the cube, so their checkpoints keep their folder.
        signature["anatomy_spacing_mm"] = round(train_set.anatomy_spacing_mm, 6)
    if dataset_id is not None:
        signature["dataset_id"] = dataset_id
    return signature
