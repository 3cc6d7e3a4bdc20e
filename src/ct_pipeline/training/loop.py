"""The per-rank training loop, shared by the in-process, spawned and torchrun paths.

Reads top to bottom like nanoGPT's train.py: check the resolution schedule
against the data and the model (``stages``); build data, model, optimiser and
schedule (``setup``) at the stage the run is at; resume if a checkpoint of
the same setup exists (``state``); then per epoch (rebuilt at each switch of
stage), per optimiser step, a visible loop over the micro-batches of gradient
accumulation (AMP, clipping), then validate, checkpoint and log. Running sums
stay on the device and are reduced across ranks once per epoch; the one host
sync a step is the non-finite check, whose value also feeds the progress bar.
Every rank runs this; rank 0 alone writes files and talks to the sink.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ct_pipeline.models.output import ModelOutput
from ct_pipeline.progress import progress
from ct_pipeline.training.checkpoint import BEST, LAST, run_directory
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.distributed import all_reduce, max_rank_weight_diff
from ct_pipeline.training.job import NonFiniteLossError, Place, TrainJob, TrainResult
from ct_pipeline.training.report import (
    best_epoch_metrics,
    closing_line,
    epoch_line,
    peak_memory_mb,
)
from ct_pipeline.training.resolution import RESOLUTION, bin_at, schedule_stages
from ct_pipeline.training.setup import Parts, build_parts, data_signature, wrap
from ct_pipeline.training.stages import check_schedule
from ct_pipeline.training.state import (
    RunState,
    next_stage,
    read_resumable,
    resume,
    save_epoch,
    training_state,
)
from ct_pipeline.training.validation import validate

logger = logging.getLogger(__name__)


def run_training(job: TrainJob, place: Place) -> TrainResult | None:
    """Train on this rank; returns the result on rank 0, None elsewhere."""
    config = job.config
    # The data set's own grid and detector, whatever the stage: the schedule
    # is checked against them and the run folder named by them before the
    # checkpoint there says at which stage to build the parts (whose data
    # set a refused bin would fail to build). One patient read, on each rank.
    data = ReconstructionDataset(
        job.volumes, job.drr_sets, job.split["train"], config.angles
    )
    # On every rank and every path (torchrun too), before anything is written.
    check_schedule(config, job.model_factory, data.grid, data.geometry)
    stages = schedule_stages(config.resolution_schedule, config.epochs)
    run_dir = run_directory(config, data_signature(data, job.split, job.dataset_id))
    checkpoint = read_resumable(run_dir, config, place)
    # Built at the stage of the epoch the checkpoint ended, whose weights it
    # holds: a run resumed at a switch switches in the loop, as it would have.
    parts = build_parts(
        job, place, bin_at(stages, checkpoint["epoch"] if checkpoint else 1)
    )
    state = resume(parts, checkpoint, run_dir)
    model, ddp = wrap(parts.module, config.compile, place)
    this_run = job.sink.run_id if job.sink is not None else None
    if place.is_main and job.sink is not None:
        job.sink.log_params(config.flat_params())
        if state.continued_run and state.continued_run != this_run:
            # The weights carry on from that run's epochs: link the two.
            job.sink.set_tags({"ct_pipeline.continues_run": state.continued_run})

    # In a terminal, one bar over the whole run (with its ETA) and one per
    # epoch beneath it; elsewhere the epoch lines logged below.
    overall = progress(
        total=config.epochs,
        initial=state.start_epoch - 1,
        desc="training",
        unit="epoch",
        show=place.is_main,
    )
    for epoch in range(state.start_epoch, config.epochs + 1):
        binning = bin_at(stages, epoch)
        if binning != parts.binning:
            # The old stage's model, DDP wrapper (with its gradient buckets),
            # optimiser and critic are let go, what they carry over taken to
            # the CPU, before the next stage's are built: never both at once.
            carried, from_bin = training_state(parts), parts.binning
            del model, ddp, parts
            free_cached_memory(place.device)
            parts = next_stage(carried, from_bin, job, place, binning)
            del carried  # host copies, loaded
            model, ddp = wrap(parts.module, config.compile, place)
            if place.is_main:
                logger.info(
                    "epoch %d: the bin %d model, frozen, is upsampled to %d^3 "
                    "voxels (bin %d), where a correction network trains",
                    epoch,
                    from_bin,
                    parts.train_set.sample_grid.size,
                    binning,
                )
        record = train_epoch(parts, model, ddp, config, place, epoch)
        improved = False
        if epoch % config.validate_every == 0 or epoch == config.epochs:
            psnr, ssim = validate(
                parts.module, parts.val_set, parts.angles, config, place, parts.autocast
            )
            record.update({"val/psnr_3d": psnr, "val/ssim_3d": ssim})
            # Only the data set's own grid competes: a coarser stage's score
            # is another measure, and the bundle holds weights for that grid.
            if binning == 1:
                improved = state.observe(epoch, psnr)
        state.history.append(record)
        if place.is_main:
            save_epoch(parts, state, config, epoch, improved, this_run)
            overall.update(1)
            logger.info(
                epoch_line(record, config.epochs, state.best_score, state.best_epoch)
            )
            if job.sink is not None:
                metrics = {k: v for k, v in record.items() if k != "epoch"}
                job.sink.log_metrics(metrics, step=epoch)
    overall.close()
    return finish(parts, state, job, place)


def train_epoch(
    parts: Parts,
    model: nn.Module,
    ddp: DistributedDataParallel | None,
    config: TrainConfig,
    place: Place,
    epoch: int,
) -> dict[str, float]:
    """One epoch of optimiser steps; returns its record (losses reduced over ranks)."""
    device, adversary, optimizer = place.device, parts.adversary, parts.optimizer
    parts.sampler.set_epoch(epoch)
    parts.train_set.set_epoch(epoch)
    model.train()
    batches = iter(parts.loader)
    loss_sum = 0.0  # host floats: the per-step check has synced them anyway
    term_sums: dict[str, torch.Tensor] = {}  # device sums, reduced once an epoch
    samples, last_lr, started = 0, optimizer.param_groups[0]["lr"], time.perf_counter()
    bar = progress(
        total=parts.micro_per_epoch,
        desc=f"epoch {epoch}/{config.epochs}",
        show=place.is_main,
        leave=False,
        position=1,
    )
    for step_in_epoch in range(parts.steps_per_epoch):
        step = (epoch - 1) * parts.steps_per_epoch + step_in_epoch + 1
        micro_steps = min(
            config.grad_accum_steps,
            parts.micro_per_epoch - step_in_epoch * config.grad_accum_steps,
        )
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        for micro_step in range(micro_steps):
            views, target = (t.to(device, non_blocking=True) for t in next(batches))
            # DDP all-reduces gradients only on the group's last micro-step.
            last = micro_step == micro_steps - 1
            sync = ddp.no_sync() if ddp is not None and not last else nullcontext()
            with sync:
                with parts.autocast():
                    output = model(views, parts.angles)
                total, terms = parts.loss_fn(float_output(output), target)
                if adversary is not None:  # adversarial
                    volume = output["volume"].float()
                    terms["adversarial"] = adversary.generator_loss(
                        volume, views, parts.angles
                    )
                    total = total + adversary.weight * terms["adversarial"]
                parts.scaler.scale(total / micro_steps).backward()
            if adversary is not None:  # adversarial: the critic's own step
                terms["discriminator"] = adversary.discriminator_step(
                    volume, target, views, parts.angles
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
            parts.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        parts.scaler.step(optimizer)
        parts.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        last_lr = optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        loss_sum += step_value
        bar.update(micro_steps)
        rate = samples / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{step_value / micro_steps:.4f}", samples_s=f"{rate:.1f}")
    bar.close()
    elapsed = time.perf_counter() - started

    names = sorted(term_sums)
    reduced = (
        all_reduce(torch.stack([term_sums[n] for n in names])) / place.world_size
        if names
        else torch.zeros(0)
    )
    return {
        "epoch": epoch,
        "train/loss": loss_sum / parts.micro_per_epoch,
        **{
            f"train/{n}": v / parts.micro_per_epoch
            for n, v in zip(names, reduced.tolist(), strict=True)
        },
        "lr": last_lr,
        RESOLUTION: float(parts.train_set.sample_grid.size),
        "train/samples_per_s": samples / elapsed,
        # The largest rank's: memory per rank is what must fit.
        "peak_memory_mb": all_reduce(
            torch.tensor(peak_memory_mb(device), device=device), dist.ReduceOp.MAX
        ).item(),
    }


def free_cached_memory(device: torch.device) -> None:
    """On CUDA, hands the blocks PyTorch's allocator caches for freed tensors
    back to the driver (tensors left in reference cycles collected first),
    so that the next stage, whose tensors differ in size, starts from a clean
    device rather than around the old stage's blocks. Nothing elsewhere."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def finish(
    parts: Parts, state: RunState, job: TrainJob, place: Place
) -> TrainResult | None:
    """Check that the ranks ended in step; on rank 0, log which epoch's weights
    are kept and hand them back."""
    divergence = max_rank_weight_diff(parts.module) if place.distributed else 0.0
    if not place.is_main:
        return None
    best = best_epoch_metrics(state.history, state.best_epoch)
    logger.info(closing_line(best, job.config.epochs))
    if job.sink is not None and best:
        # Beside the last epoch's val/*: the weights kept are the best epoch's.
        job.sink.log_metrics(best, step=state.best_epoch)
    return TrainResult(
        best_state_dict=state.best_weights(),
        grid=parts.train_set.sample_grid,
        geometry=parts.train_set.sample_geometry,
        history=state.history,
        best_val_psnr=state.best_score,
        best_epoch=state.best_epoch,
        checkpoint_paths={"last": state.run_dir / LAST, "best": state.run_dir / BEST},
        start_epoch=state.start_epoch,
        max_rank_weight_diff=divergence,
    )


def float_output(output: ModelOutput) -> ModelOutput:
    """fp32 copies of the network output, so the loss is computed outside autocast precision."""
    return ModelOutput(
        volume=output["volume"].float(),
        deep=[t.float() for t in output["deep"]],
        attention=output["attention"],
    )
