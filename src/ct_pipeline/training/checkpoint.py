"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain types (tensors, numbers, strings, lists,
dicts): weights, optimiser, scheduler and scaler states, the last finished
epoch, the config, the best validation PSNR and the history so far. ``last.pt``
is rewritten every epoch; ``best.pt`` holds the weights of the best epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.atomic import atomic_path
from ct_pipeline.training.config import TrainConfig, run_name

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


def run_directory(config: TrainConfig, data_signature: Mapping[str, Any]) -> Path:
    """``<checkpoint_dir>/<model>-<views>v-<hash>``: one folder per model/data
    identity, named like the trained model."""
    name = run_name(config.model, len(config.angles))
    return (
        Path(config.checkpoint_dir) / f"{name}-{config.identity_hash(data_signature)}"
    )


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Written atomically: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load on CPU; weights_only refuses pickled code, so a checkpoint cannot run anything."""
    return torch.load(path, map_location="cpu", weights_only=True)


def find_resumable(directory: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The ``last.pt`` of this run folder, or None when training starts fresh.

    The folder is keyed by the config's identity hash, so a checkpoint whose
    stored identity differs was put there by hand (or by an older version):
    refused, never silently continued.
    """
    path = directory / LAST
    if not path.exists():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:
        raise ValueError(
            f"cannot read checkpoint {path} ({error}); delete it to train from scratch"
        ) from error
    stored = TrainConfig.from_params(checkpoint.get("config", {})).identity()
    wanted = config.identity()
    mismatched = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if mismatched:
        raise ValueError(
            f"{path} was written for a different config (fields {mismatched}); "
            "remove it or change checkpoint_dir"
        )
    if checkpoint["epoch"] >= config.epochs:
        logger.warning(
            "this exact setup already finished training (%d/%d epochs, %s): nothing "
            "to train, its best weights are reused; delete %s to train it again",
            checkpoint["epoch"],
            config.epochs,
            path,
            directory,
        )
    else:
        logger.info(
            "resuming an interrupted run of this setup from epoch %d (%s): "
            "continuing at epoch %d",
            checkpoint["epoch"],
            path,
            checkpoint["epoch"] + 1,
        )
    return checkpoint
