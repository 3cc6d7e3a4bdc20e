"""The per-rank training loop, shared by the in-process, spawned and torchrun paths.

Reads top to bottom like nanoGPT's train.py: build data, model, optimiser and
schedule; resume if a checkpoint of the same setup exists; then per epoch
train (gradient accumulation, clipping, AMP), validate, checkpoint, log.
Every rank runs this; rank 0 alone writes files and talks to the sink.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.metrics import psnr_3d, ssim_3d
from ct_pipeline.models.memory import enable_activation_checkpointing
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.checkpoint import (
    BEST,
    LAST,
    find_resumable,
    load_checkpoint,
    run_directory,
    save_checkpoint,
)
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.sink import MetricSink

logger = logging.getLogger(__name__)

ModelFactory = Callable[[TrainConfig, Geometry, int, float], nn.Module]
LossFactory = Callable[[TrainConfig], nn.Module]
RESULT_FILE = "result.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; every rank raises it at the same step."""


def build_model_from_config(
    config: TrainConfig, geometry: Geometry, volume_size: int, spacing_mm: float
) -> nn.Module:
    from ct_pipeline.models import build_model

    return build_model(
        config.model,
        geometry,
        volume_size,
        spacing_mm,
        len(config.angles),
        **config.model_overrides,
    )


def build_loss_from_config(config: TrainConfig) -> nn.Module:
    from ct_pipeline.losses import ReconstructionLoss

    extra = {} if config.perceptual is None else {"perceptual": config.perceptual}
    return ReconstructionLoss(weights=config.loss_weights, **extra)


@dataclass
class TrainJob:
    """Everything a rank needs; picklable, so mp.spawn can hand it to each worker.

    ``volumes`` and ``drr_sets`` map patient ids to loaders (or, in tests and
    in-process studies, values): a rank reads a patient when it needs it.
    """

    volumes: Mapping[str, Any]
    drr_sets: Mapping[str, Any]
    split: dict[str, list[str]]
    config: TrainConfig
    sink: MetricSink | None = None
    model_factory: ModelFactory = build_model_from_config
    loss_factory: LossFactory = build_loss_from_config


@dataclass
class TrainResult:
    """What rank 0 hands back: the best weights, the per-epoch history and where files are."""

    best_state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_val_psnr: float
    best_epoch: int
    checkpoint_paths: dict[str, Path]
    start_epoch: int = 1
    # Largest |w_rank - w_rank0| over all weights at the end: 0 when DDP kept ranks in step.
    max_rank_weight_diff: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        payload = dict(self.__dict__)
        payload["checkpoint_paths"] = {
            k: str(v) for k, v in self.checkpoint_paths.items()
        }
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainResult:
        data = dict(payload)
        data["checkpoint_paths"] = {
            k: Path(v) for k, v in data["checkpoint_paths"].items()
        }
        return cls(**data)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimiser step: linear warm-up to 1, then half a cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def cpu_share(world_size: int) -> int:
    """This process's share of the cores it may run on."""
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )
    return max(1, cores // world_size)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _all_reduce(tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


def float_output(output: Mapping[str, Any]) -> dict[str, Any]:
    """fp32 copies of the network output, so the loss is computed outside autocast precision."""
    return {
        key: [t.float() for t in value]
        if isinstance(value, list)
        else value.float()
        if torch.is_tensor(value)
        else value
        for key, value in output.items()
    }


def _batches(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _validate(
    model: nn.Module,
    val_set: ReconstructionDataset,
    angles: torch.Tensor,
    config: TrainConfig,
    rank: int,
    world_size: int,
    device: torch.device,
    autocast: Callable[[], Any],
) -> tuple[float, float]:
    """Mean psnr_3d / ssim_3d over the val split: each rank scores a shard, sums are all-reduced."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # psnr, ssim, count
    shard = list(range(rank, len(val_set), world_size))
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
    _all_reduce(sums)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _data_signature(
    train_set: ReconstructionDataset, split: Mapping[str, list[str]]
) -> dict[str, Any]:
    return {
        "volume_size": train_set.volume_size,
        "spacing_mm": round(train_set.voxel_mm, 6),
        "geometry": train_set.geometry.to_dict(),
        "train": sorted(split["train"]),
        "val": sorted(split["val"]),
    }


def _resume_state(
    run_dir: Path, config: TrainConfig, rank: int, world_size: int
) -> dict[str, Any] | None:
    """Rank 0 reads last.pt and shares it, so nodes need not see the same disk."""
    checkpoint = find_resumable(run_dir, config) if rank == 0 else None
    if world_size > 1:
        box = [checkpoint]
        dist.broadcast_object_list(box, src=0)
        checkpoint = box[0]
    return checkpoint


def run_training(
    job: TrainJob, rank: int, world_size: int, device: torch.device
) -> TrainResult | None:
    """Train on this rank; returns the result on rank 0, None elsewhere."""
    config, is_main, distributed = job.config, rank == 0, world_size > 1
    amp = config.resolve_amp(device.type)
    amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp != "off")

    angles_list = config.angles
    train_set = ReconstructionDataset(
        job.volumes,
        job.drr_sets,
        job.split["train"],
        angles_list,
        config.hu_window,
        Augmentation.from_dict(config.augment),
        config.seed,
    )
    val_set = ReconstructionDataset(
        job.volumes, job.drr_sets, job.split["val"], angles_list, config.hu_window
    )
    angles = train_set.angles_tensor().to(device)
    # Shuffled with seed + epoch on every rank: rank r takes every world_size-th
    # index of one shared permutation, so at each step the ranks together see
    # exactly the samples a single process with the global batch would.
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor]] = DistributedSampler(
        train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed
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

    torch.manual_seed(config.seed)  # identical initial weights on every rank and run
    model = job.model_factory(
        config, train_set.geometry, train_set.volume_size, train_set.voxel_mm
    ).to(device)
    if config.activation_checkpointing:
        enable_activation_checkpointing(model)
    loss_fn = job.loss_factory(config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    micro_per_epoch = len(loader)
    if config.steps_per_epoch is not None:
        micro_per_epoch = min(
            micro_per_epoch, config.steps_per_epoch * config.grad_accum_steps
        )
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = LambdaLR(
        optimizer, warmup_cosine(warmup_steps, config.epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    run_dir = run_directory(config, _data_signature(train_set, job.split))
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    continued_run = None
    start_epoch = 1
    checkpoint = _resume_state(run_dir, config, rank, world_size)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        history = list(checkpoint["history"])
        best_score, best_epoch = checkpoint["best_score"], checkpoint["best_epoch"]
        start_epoch = checkpoint["epoch"] + 1
        continued_run = checkpoint.get("tracking_run_id")
    module = model
    ddp = None
    if distributed:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = ddp
    if config.compile:
        # Around DDP, so that its graph breaks at the gradient buckets; the
        # weights stay those of ``module`` (saved, validated, returned).
        # Static shapes: a training run has one batch shape (the last, smaller
        # batch recompiles once); dynamic shapes failed in Inductor on this model.
        model = cast(nn.Module, torch.compile(model, dynamic=False))
    this_run = getattr(job.sink, "run_id", None)
    if is_main and job.sink is not None:
        job.sink.log_params(config.flat_params())
        if continued_run and continued_run != this_run:
            # The weights carry on from that run's epochs: link the two.
            job.sink.set_tags({"ct_pipeline.continues_run": continued_run})

    # One bar over the whole run (with its ETA) and one per epoch beneath it.
    overall = tqdm(
        total=config.epochs,
        initial=start_epoch - 1,
        desc="training",
        unit="epoch",
        disable=not is_main,
    )
    for epoch in range(start_epoch, config.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        term_sums: dict[str, torch.Tensor] = {}
        samples, last_lr, started = (
            0,
            optimizer.param_groups[0]["lr"],
            time.perf_counter(),
        )
        bar = tqdm(
            loader,
            total=micro_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not is_main,
            leave=False,
            position=1,
        )
        for micro, (views, target) in enumerate(bar):
            if micro == micro_per_epoch:
                break
            group_start = micro - micro % config.grad_accum_steps
            group_size = min(config.grad_accum_steps, micro_per_epoch - group_start)
            final_micro = micro == group_start + group_size - 1
            step = (epoch - 1) * steps_per_epoch + micro // config.grad_accum_steps + 1
            views, target = (
                views.to(device, non_blocking=True),
                target.to(device, non_blocking=True),
            )
            # Gradients are all-reduced only on the micro-step that ends an accumulation group.
            sync = (
                ddp.no_sync() if ddp is not None and not final_micro else nullcontext()
            )
            with sync:
                with autocast():
                    output = model(views, angles)
                total, terms = loss_fn(float_output(output), target)
                # Reduced before the check so that all ranks agree and stop together.
                mean_loss = _all_reduce(total.detach().double().clone()) / world_size
                if not torch.isfinite(mean_loss):
                    raise NonFiniteLossError(
                        f"non-finite loss ({mean_loss.item()}) at epoch {epoch}, step {step} "
                        f"(micro-batch {micro + 1}/{micro_per_epoch}); lower train.lr or check the inputs"
                    )
                scaler.scale(total / group_size).backward()
            if final_micro:
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                last_lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
            loss_sum += mean_loss
            # Summed on the device: no host sync per loss term and step.
            for name, value in terms.items():
                term_sums[name] = (
                    term_sums.get(
                        name, torch.zeros((), dtype=torch.float64, device=device)
                    )
                    + value.detach().double()
                )
            samples += views.shape[0] * world_size
            if is_main:
                rate = samples / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{mean_loss.item():.4f}", samples_s=f"{rate:.1f}")
        elapsed = time.perf_counter() - started

        names = sorted(term_sums)
        reduced_terms: torch.Tensor | list[torch.Tensor] = (
            _all_reduce(torch.stack([term_sums[n] for n in names])) / world_size
            if names
            else []
        )
        record: dict[str, float] = {
            "epoch": epoch,
            "train/loss": loss_sum.item() / micro_per_epoch,
        }
        record.update(
            {
                f"train/{n}": float(v) / micro_per_epoch
                for n, v in zip(names, reduced_terms, strict=True)
            }
        )
        record.update(
            {
                "lr": last_lr,
                "train/samples_per_s": samples / elapsed,
                # The largest rank's: memory per rank is what must fit.
                "peak_memory_mb": _all_reduce(
                    torch.tensor(peak_memory_mb(device), device=device),
                    dist.ReduceOp.MAX,
                ).item(),
            }
        )
        improved = False
        if epoch % config.validate_every == 0 or epoch == config.epochs:
            psnr, ssim = _validate(
                module, val_set, angles, config, rank, world_size, device, autocast
            )
            record.update({"val/psnr_3d": psnr, "val/ssim_3d": ssim})
            improved = psnr > best_score
            if improved:
                best_score, best_epoch = psnr, epoch
        history.append(record)

        if is_main:
            state = {
                k: v.detach().cpu().clone() for k, v in module.state_dict().items()
            }
            common = {
                "epoch": epoch,
                "tracking_run_id": this_run or continued_run,
                "config": config.to_dict(),
                "best_score": best_score,
                "best_epoch": best_epoch,
            }
            save_checkpoint(
                run_dir / LAST,
                {
                    **common,
                    "model": state,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "history": history,
                },
            )
            if improved:
                save_checkpoint(run_dir / BEST, {**common, "model": state})
                best_state = state
            overall.update(1)
            logger.info(epoch_line(record, config.epochs, best_score, best_epoch))
            if job.sink is not None:
                job.sink.log_metrics(
                    {k: v for k, v in record.items() if k != "epoch"}, step=epoch
                )

    overall.close()
    divergence = _max_rank_weight_diff(module) if distributed else 0.0
    if not is_main:
        return None
    if best_state is None and (run_dir / BEST).exists():
        best_state = load_checkpoint(run_dir / BEST)["model"]
    return TrainResult(
        best_state_dict=best_state if best_state is not None else {},
        history=history,
        best_val_psnr=best_score,
        best_epoch=best_epoch,
        checkpoint_paths={"last": run_dir / LAST, "best": run_dir / BEST},
        start_epoch=start_epoch,
        max_rank_weight_diff=divergence,
    )


def epoch_line(
    record: Mapping[str, float], epochs: int, best_score: float, best_epoch: int
) -> str:
    """One console line per epoch: ``epoch 3/45  loss 0.1234  val 28.31 dB / SSIM 0.912  best 28.31 dB (3)  12.3 samples/s``."""
    parts = [
        f"epoch {int(record['epoch'])}/{epochs}",
        f"loss {record['train/loss']:.4f}",
    ]
    if "val/psnr_3d" in record:
        parts.append(
            f"val {record['val/psnr_3d']:.2f} dB / SSIM {record['val/ssim_3d']:.3f}"
        )
    if best_epoch:
        parts.append(f"best {best_score:.2f} dB ({best_epoch})")
    parts.append(f"{record['train/samples_per_s']:.1f} samples/s")
    return "  ".join(parts)


def _max_rank_weight_diff(module: nn.Module) -> float:
    """Largest difference between any rank's weights and rank 0's (a DDP sanity check)."""
    flat = nn.utils.parameters_to_vector(module.parameters()).detach()
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def distributed_worker(
    rank: int,
    world_size: int,
    local_rank: int,
    job: TrainJob,
    backend: str,
    init_method: str,
    result_dir: Path | None,
    local_world_size: int,
) -> TrainResult | None:
    """Join the process group, train, and on failure leave the error where the parent can read it."""
    try:
        device_type = job.config.resolve_device(local_world_size)
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=job.config.dist_timeout_s),
        )
        try:
            result = run_training(job, rank, world_size, device)
        finally:
            dist.destroy_process_group()
        if result is not None and result_dir is not None:
            save_checkpoint(result_dir / RESULT_FILE, result.to_payload())
        return result
    except BaseException as error:
        if result_dir is not None:
            (result_dir / f"error_rank{rank}.json").write_text(
                json.dumps(
                    {"rank": rank, "type": type(error).__name__, "message": str(error)}
                )
            )
        raise


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGTERM this process when its parent dies (Linux).

    A worker must not outlive the run that started it: after a ``kill -9`` of
    ``kedro run`` orphaned ranks would train on, writing checkpoints and
    metrics nobody asked for. Elsewhere the DDP timeout ends them.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the call above
        os._exit(1)


def spawned_worker(
    rank: int,
    world_size: int,
    job: TrainJob,
    backend: str,
    port: int,
    result_dir: Path,
    parent_pid: int,
) -> None:
    """Entry point of each process started by torch.multiprocessing.spawn (one host)."""
    die_with_parent(parent_pid)
    # The launcher leaves threads alone; each worker takes its share of the cores.
    torch.set_num_threads(cpu_share(world_size))
    logging.basicConfig(level=logging.INFO)
    init_method = f"tcp://127.0.0.1:{port}"
    distributed_worker(
        rank, world_size, rank, job, backend, init_method, result_dir, world_size
    )
