"""What a run carries from epoch to epoch, and how it survives an
interruption: resumed from ``last.pt`` at the start, saved after each epoch
(``best.pt`` too when validation improved)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.training.checkpoint import (
    BEST,
    LAST,
    find_resumable,
    load_checkpoint,
    save_checkpoint,
)
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.distributed import broadcast_object
from ct_pipeline.training.job import Place
from ct_pipeline.training.setup import Parts


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


def resume(parts: Parts, config: TrainConfig, place: Place, run_dir: Path) -> RunState:
    """The state of an interrupted run of this setup, loaded into ``parts``,
    or a fresh one. Rank 0 reads ``last.pt`` and shares it, so nodes need not
    see the same disk."""
    state = RunState(run_dir)
    checkpoint = broadcast_object(
        find_resumable(run_dir, config) if place.is_main else None, place
    )
    if checkpoint is None:
        return state
    parts.module.load_state_dict(checkpoint["model"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    parts.scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint["scaler"] is not None:
        parts.scaler.load_state_dict(checkpoint["scaler"])
    if parts.adversary is not None:  # adversarial
        parts.adversary.load_state_dict(checkpoint["adversarial"])
    state.history = list(checkpoint["history"])
    state.best_score, state.best_epoch = (
        checkpoint["best_score"],
        checkpoint["best_epoch"],
    )
    state.start_epoch = checkpoint["epoch"] + 1
    state.continued_run = checkpoint.get("tracking_run_id")
    return state


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
    weights = {
        k: v.detach().cpu().clone() for k, v in parts.module.state_dict().items()
    }
    common: dict[str, Any] = {
        "epoch": epoch,
        "tracking_run_id": tracking_run or state.continued_run,
        "config": config.to_dict(),
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
    }
    adversarial = (
        {"adversarial": parts.adversary.state_dict()} if parts.adversary else {}
    )
    save_checkpoint(
        state.run_dir / LAST,
        {
            **common,
            "model": weights,
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
            "history": state.history,
            **adversarial,
        },
    )
    if improved:
        save_checkpoint(state.run_dir / BEST, {**common, "model": weights})
        state.best_state = weights
