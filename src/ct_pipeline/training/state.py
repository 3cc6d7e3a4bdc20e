"""What a run carries from epoch to epoch, and how it survives an
interruption: resumed from ``last.pt`` at the start, saved after each epoch
(``best.pt`` too when validation improved), and carried from one stage of
the resolution schedule to the next."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.models.cascade import FineStage
from ct_pipeline.training.checkpoint import (
    BEST,
    LAST,
    find_resumable,
    load_checkpoint,
    save_checkpoint,
)
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.distributed import broadcast_object
from ct_pipeline.training.job import Place, TrainJob
from ct_pipeline.training.setup import Parts, build_parts
from ct_pipeline.training.stages import check_same_weights


@dataclass
class RunState:
    """The history and the best epoch so far; rank 0 also keeps its weights."""

    run_dir: Path
    start_epoch: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    # The tracking run whose epochs these weights continue (None: a fresh start).
    continued_run: str | None = None

    def observe(self, epoch: int, psnr: float) -> bool:
        """Record a validation score; True when it is the best so far."""
        if not psnr > self.best_score:  # a NaN score is never the best
            return False
        self.best_score, self.best_epoch = psnr, epoch
        return True

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's weights (read back from ``best.pt`` after a resume)."""
        if self.best_state is None and (self.run_dir / BEST).exists():
            self.best_state = load_checkpoint(self.run_dir / BEST)["model"]
        return self.best_state if self.best_state is not None else {}


def read_resumable(
    run_dir: Path, config: TrainConfig, place: Place
) -> dict[str, Any] | None:
    """``last.pt`` of an interrupted run of this setup on every rank, or None.
    Rank 0 reads it and shares it, so nodes need not see the same disk."""
    return broadcast_object(
        find_resumable(run_dir, config) if place.is_main else None, place
    )


def resume(parts: Parts, checkpoint: dict[str, Any] | None, run_dir: Path) -> RunState:
    """The state of ``checkpoint``, loaded into ``parts`` (built for the
    stage of the epoch it continues at), or a fresh one."""
    state = RunState(run_dir)
    if checkpoint is None:
        return state
    load_training_state(parts, checkpoint, f"{run_dir / LAST}")
    state.history = list(checkpoint["history"])
    state.best_score, state.best_epoch = (
        checkpoint["best_score"],
        checkpoint["best_epoch"],
    )
    state.start_epoch = checkpoint["epoch"] + 1
    state.continued_run = checkpoint.get("tracking_run_id")
    return state


def training_state(parts: Parts) -> dict[str, Any]:
    """Weights (copies), optimiser, LR schedule, scaler and critic: what the
    next epoch needs of ``parts``, on the CPU, so that a stage switch can let
    go of the device's before it builds the next stage."""
    weights = {
        k: v.detach().cpu().clone() for k, v in parts.module.state_dict().items()
    }
    adversarial = (
        {"adversarial": _on_cpu(parts.adversary.state_dict())}
        if parts.adversary
        else {}
    )
    return {
        "model": weights,
        "optimizer": _on_cpu(parts.optimizer.state_dict()),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
        **adversarial,
    }


def _on_cpu(value: Any) -> Any:
    """``value``, a state dict, with each tensor in it on the CPU. Not copied
    where already there: the result is saved, or loaded into the next
    stage's optimiser, at once."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, Mapping):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(item) for item in value)
    return value


def load_training_state(parts: Parts, saved: Mapping[str, Any], source: str) -> None:
    """``saved`` (a ``training_state``) into ``parts``; the weights must have
    every name and shape of ``parts``' (``source`` names where they come from)."""
    check_same_weights(parts.module.state_dict(), saved["model"], source)
    parts.module.load_state_dict(saved["model"])
    # By position: the same names in the same order (checked above).
    parts.optimizer.load_state_dict(saved["optimizer"])
    _load_schedule_and_critic(parts, saved, source)


def _load_schedule_and_critic(
    parts: Parts, saved: Mapping[str, Any], source: str
) -> None:
    """The LR schedule, the loss scaler and the critic of ``saved``."""
    parts.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"] is not None:
        parts.scaler.load_state_dict(saved["scaler"])
    if parts.adversary is not None:  # adversarial
        critic = saved["adversarial"]
        check_same_weights(
            parts.adversary.module.state_dict(), critic["model"], f"{source} (critic)"
        )
        parts.adversary.load_state_dict(critic)


def next_stage(
    carried: Mapping[str, Any], from_bin: int, job: TrainJob, place: Place, binning: int
) -> Parts:
    """The parts of the stage of ``binning`` (data, model and critic at its
    grid and detector) continuing ``carried``, the ``training_state`` of the
    stage of ``from_bin``: its network becomes the new stage's frozen coarse
    network, weights unchanged; the LR schedule, the loss scaler and the
    critic carry on. The optimiser starts afresh on the new stage's
    correction, the only weights that train from here."""
    stage = build_parts(job, place, binning)
    source = f"the bin {from_bin} stage's model"
    if not isinstance(stage.module, FineStage):
        raise TypeError(f"the bin {binning} stage's model has no coarse network")
    coarse = stage.module.coarse
    check_same_weights(coarse.state_dict(), carried["model"], source)
    coarse.load_state_dict(carried["model"])
    _load_schedule_and_critic(stage, carried, source)
    # A fresh optimiser holds the rate of step 0: set the one the schedule
    # has reached, as a loaded optimiser state would have.
    scheduler = stage.scheduler
    for group, base, factor in zip(
        stage.optimizer.param_groups,
        scheduler.base_lrs,
        scheduler.lr_lambdas,
        strict=True,
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
    return stage


def save_epoch(
    parts: Parts,
    state: RunState,
    config: TrainConfig,
    epoch: int,
    improved: bool,
    tracking_run: str | None,
) -> None:
    """``last.pt`` with everything a resume needs; ``best.pt`` (weights only)
    when this epoch improved. Rank 0 only."""
    carried = training_state(parts)
    common: dict[str, Any] = {
        "epoch": epoch,
        "tracking_run_id": tracking_run or state.continued_run,
        "config": config.to_dict(),
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
    }
    save_checkpoint(
        state.run_dir / LAST, {**common, **carried, "history": state.history}
    )
    if improved:
        save_checkpoint(state.run_dir / BEST, {**common, "model": carried["model"]})
        state.best_state = carried["model"]
