"""The per-rank training loop, shared by the in-process, spawned and torchrun paths.

Reads top to bottom like nanoGPT's train.py: build data, model, optimiser and
schedule; resume if a checkpoint of the same setup exists; then per epoch,
per optimiser step, a visible loop over the micro-batches of gradient
accumulation (AMP, clipping), then validate, checkpoint and log. Running
sums stay on the device and are reduced across ranks once per epoch; the
one host sync a step is the non-finite check, whose value also feeds the
progress bar. Every rank runs this; rank 0 alone writes files and talks to
the sink.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler

from ct_pipeline.metrics import psnr_3d, ssim_3d
from ct_pipeline.models.memory import enable_activation_checkpointing
from ct_pipeline.progress import progress
from ct_pipeline.training.adversarial import build_adversary
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
from ct_pipeline.training.distributed import (
    all_reduce,
    broadcast_object,
    max_rank_weight_diff,
)
from ct_pipeline.training.job import NonFiniteLossError, Place, TrainJob, TrainResult

logger = logging.getLogger(__name__)


def run_training(job: TrainJob, place: Place) -> TrainResult | None:
    """Train on this rank; returns the result on rank 0, None elsewhere."""
    config, device = job.config, place.device
    amp = config.resolve_amp(device.type)
    amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp != "off")

    # -- data ------------------------------------------------------------------
    train_set = ReconstructionDataset(
        job.volumes,
        job.drr_sets,
        job.split["train"],
        config.angles,
        config.hu_window,
        Augmentation.from_dict(config.augment),
        config.seed,
    )
    val_set = ReconstructionDataset(
        job.volumes, job.drr_sets, job.split["val"], config.angles, config.hu_window
    )
    angles = train_set.angles_tensor().to(device)
    # Shuffled with seed + epoch on every rank: rank r takes every world_size-th
    # index of one shared permutation, so at each step the ranks together see
    # exactly the samples a single process with the global batch would.
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor]] = DistributedSampler(
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

    # -- model, loss, optimiser, schedule ----------------------------------------
    torch.manual_seed(config.seed)  # identical initial weights on every rank and run
    grid = train_set.grid
    module = job.model_factory(
        config, train_set.geometry, grid.size, grid.spacing_mm
    ).to(device)
    if config.activation_checkpointing:
        enable_activation_checkpointing(module)
    loss_fn = job.loss_factory(config).to(device)
    # adversarial: None unless loss_weights.adversarial > 0 (built after the
    # generator, so the generator's initial weights never depend on it).
    adversary = build_adversary(
        config, train_set.geometry, grid.size, grid.spacing_mm, place
    )
    # Fused: one kernel over all parameters instead of a loop over ~260
    # tensors (CPU and CUDA alike); 6.7 -> 1.8 ms a step for `small` on CPU.
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = LambdaLR(
        optimizer, warmup_cosine(warmup_steps, config.epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    # -- resume ----------------------------------------------------------------
    run_dir = run_directory(
        config, _data_signature(train_set, job.split, job.dataset_id)
    )
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    continued_run, start_epoch = None, 1
    # Rank 0 reads last.pt and shares it, so nodes need not see the same disk.
    checkpoint = broadcast_object(
        find_resumable(run_dir, config) if place.is_main else None, place
    )
    if checkpoint is not None:
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        history = list(checkpoint["history"])
        best_score, best_epoch = checkpoint["best_score"], checkpoint["best_epoch"]
        start_epoch = checkpoint["epoch"] + 1
        continued_run = checkpoint.get("tracking_run_id")
        if adversary is not None:  # adversarial
            adversary.load_state_dict(checkpoint["adversarial"])

    # -- wrap: DDP, then compile ----------------------------------------------------
    model, ddp = module, None
    if place.distributed:
        ddp = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = ddp
    if config.compile:
        # Around DDP, so that its graph breaks at the gradient buckets; the
        # weights stay those of ``module`` (saved, validated, returned).
        # Static shapes: a training run has one batch shape (the last, smaller
        # batch recompiles once); dynamic shapes failed in Inductor on this model.
        model = cast(nn.Module, torch.compile(model, dynamic=False))
    this_run = getattr(job.sink, "run_id", None)
    if place.is_main and job.sink is not None:
        job.sink.log_params(config.flat_params())
        if continued_run and continued_run != this_run:
            # The weights carry on from that run's epochs: link the two.
            job.sink.set_tags({"ct_pipeline.continues_run": continued_run})

    # -- train -----------------------------------------------------------------
    # In a terminal, one bar over the whole run (with its ETA) and one per
    # epoch beneath it; elsewhere the epoch lines logged below.
    overall = progress(
        total=config.epochs,
        initial=start_epoch - 1,
        desc="training",
        unit="epoch",
        show=place.is_main,
    )
    for epoch in range(start_epoch, config.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        batches = iter(loader)
        loss_sum = 0.0  # host floats: the per-step check has synced them anyway
        term_sums: dict[str, torch.Tensor] = {}  # device sums, reduced once an epoch
        samples, last_lr, started = (
            0,
            optimizer.param_groups[0]["lr"],
            time.perf_counter(),
        )
        bar = progress(
            total=micro_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            show=place.is_main,
            leave=False,
            position=1,
        )
        for step_in_epoch in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + step_in_epoch + 1
            micro_steps = min(
                config.grad_accum_steps,
                micro_per_epoch - step_in_epoch * config.grad_accum_steps,
            )
            step_loss = torch.zeros((), dtype=torch.float64, device=device)
            for micro_step in range(micro_steps):
                views, target = (t.to(device, non_blocking=True) for t in next(batches))
                # DDP all-reduces gradients only on the group's last micro-step.
                last = micro_step == micro_steps - 1
                sync = ddp.no_sync() if ddp is not None and not last else nullcontext()
                with sync:
                    with autocast():
                        output = model(views, angles)
                    total, terms = loss_fn(float_output(output), target)
                    if adversary is not None:  # adversarial
                        volume = output["volume"].float()
                        terms["adversarial"] = adversary.generator_loss(
                            volume, views, angles
                        )
                        total = total + adversary.weight * terms["adversarial"]
                    scaler.scale(total / micro_steps).backward()
                if adversary is not None:  # adversarial: the critic's own step
                    terms["discriminator"] = adversary.discriminator_step(
                        volume, target, views, angles
                    )
                step_loss += total.detach().double()
                for name, value in terms.items():
                    v = value.detach().double()
                    term_sums[name] = term_sums[name] + v if name in term_sums else v
                samples += views.shape[0] * place.world_size
            # Reduced before the check so that all ranks agree and stop together,
            # before a non-finite gradient reaches the weights.
            step_value = (all_reduce(step_loss) / place.world_size).item()
            if not math.isfinite(step_value):
                raise NonFiniteLossError(
                    f"non-finite loss ({step_value}) at epoch {epoch}, step {step}; "
                    "lower train.lr or check the inputs"
                )
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            last_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            loss_sum += step_value
            bar.update(micro_steps)
            rate = samples / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(
                loss=f"{step_value / micro_steps:.4f}", samples_s=f"{rate:.1f}"
            )
        bar.close()
        elapsed = time.perf_counter() - started

        # -- epoch record: reduced once -----------------------------------------------
        names = sorted(term_sums)
        reduced = (
            all_reduce(torch.stack([term_sums[n] for n in names])) / place.world_size
            if names
            else torch.zeros(0)
        )
        record: dict[str, float] = {
            "epoch": epoch,
            "train/loss": loss_sum / micro_per_epoch,
            **{
                f"train/{n}": v / micro_per_epoch
                for n, v in zip(names, reduced.tolist(), strict=True)
            },
            "lr": last_lr,
            "train/samples_per_s": samples / elapsed,
            # The largest rank's: memory per rank is what must fit.
            "peak_memory_mb": all_reduce(
                torch.tensor(peak_memory_mb(device), device=device), dist.ReduceOp.MAX
            ).item(),
        }
        improved = False
        if epoch % config.validate_every == 0 or epoch == config.epochs:
            psnr, ssim = validate(module, val_set, angles, config, place, autocast)
            record.update({"val/psnr_3d": psnr, "val/ssim_3d": ssim})
            improved = psnr > best_score
            if improved:
                best_score, best_epoch = psnr, epoch
        history.append(record)

        # -- checkpoint and log (rank 0) ---------------------------------------------
        if place.is_main:
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
                    **({"adversarial": adversary.state_dict()} if adversary else {}),
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
    divergence = max_rank_weight_diff(module) if place.distributed else 0.0
    if not place.is_main:
        return None
    best = best_epoch_metrics(history, best_epoch)
    logger.info(closing_line(best, config.epochs))
    if job.sink is not None and best:
        # Beside the last epoch's val/*: the weights kept are the best epoch's.
        job.sink.log_metrics(best, step=best_epoch)
    if best_state is None and (run_dir / BEST).exists():
        best_state = load_checkpoint(run_dir / BEST)["model"]
    return TrainResult(
        best_state_dict=best_state if best_state is not None else {},
        grid=grid,
        geometry=train_set.geometry,
        history=history,
        best_val_psnr=best_score,
        best_epoch=best_epoch,
        checkpoint_paths={"last": run_dir / LAST, "best": run_dir / BEST},
        start_epoch=start_epoch,
        max_rank_weight_diff=divergence,
    )


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimiser step: linear warm-up to 1, then half a cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


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


def best_epoch_metrics(
    history: list[dict[str, float]], best_epoch: int
) -> dict[str, float]:
    """``best/epoch`` and the validation metrics of that epoch as ``best/val_*``
    (e.g. ``best/val_psnr_3d``); empty when no epoch was validated."""
    record = next((r for r in history if r["epoch"] == best_epoch), None)
    if not best_epoch or record is None:
        return {}
    return {"best/epoch": float(best_epoch)} | {
        f"best/{key.replace('/', '_')}": value
        for key, value in record.items()
        if key.startswith("val/")
    }


def closing_line(best: Mapping[str, float], epochs: int) -> str:
    """The log line that ends training: which epoch's weights are kept and why."""
    if not best:
        return f"training done ({epochs} epochs): no epoch was validated"
    return (
        f"training done: kept epoch {int(best['best/epoch'])}/{epochs}, the best "
        f"on validation ({best['best/val_psnr_3d']:.2f} dB / SSIM "
        f"{best['best/val_ssim_3d']:.3f})"
    )


def _batches(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _data_signature(
    train_set: ReconstructionDataset,
    split: Mapping[str, list[str]],
    dataset_id: str | None,
) -> dict[str, Any]:
    """What the weights were trained on, for the checkpoint folder's identity."""
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
