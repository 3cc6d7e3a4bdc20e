"""``train_model``: the one call a node makes; it starts the DDP ranks itself.

world_size 1 trains in this process; world_size > 1 spawns one process per
rank (training/distributed.py). Every patient is checked first, in this
process, and SIGTERM stops a run as cleanly as Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.distributed import spawn_ranks
from ct_pipeline.training.job import (
    LossFactory,
    ModelFactory,
    Place,
    TrainJob,
    TrainResult,
    build_loss_from_config,
    build_model_from_config,
)
from ct_pipeline.training.loop import run_training
from ct_pipeline.training.sink import MetricSink


class TrainingStopped(KeyboardInterrupt):
    """SIGTERM stopped the training (like Ctrl-C): ``last.pt`` of the last
    finished epoch stays, and the same command resumes from it."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (``kill``, a batch scheduler's time limit) into an exception.

    By default SIGTERM ends Python at once, without unwinding: the tracking
    run stays RUNNING and the parent never tells its workers. As an exception
    it unwinds like Ctrl-C: every ``finally`` runs, the run is closed as
    failed, spawned workers die with their parent (die_with_parent), and the
    checkpoints, written atomically once an epoch, are left whole.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        raise TrainingStopped(
            "training stopped by SIGTERM; run the same command again to resume "
            "from the last finished epoch"
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_model(
    volumes: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    split: dict[str, list[str]],
    config: TrainConfig,
    sink: MetricSink | None = None,
    model_factory: ModelFactory = build_model_from_config,
    loss_factory: LossFactory = build_loss_from_config,
    dataset_id: str | None = None,
) -> TrainResult:
    """Train on ``split["train"]``, validate on ``split["val"]``; returns rank 0's result.

    ``volumes`` and ``drr_sets`` map patient ids to picklable loaders (Kedro's
    partitions) or to values; ranks read patients as they need them. Every
    patient is read and checked once here, one at a time, before any rank
    starts or anything is written.

    ``model_factory(config, geometry, grid)`` and
    ``loss_factory(config)`` default to build_model / ReconstructionLoss; they
    must be module-level callables when world_size > 1 (they are pickled).
    """
    for name in ("train", "val"):
        if not split.get(name):
            raise ValueError(
                f"split[{name!r}] must list at least one patient, got {split.get(name)!r}"
            )
    # Fail here, in the parent, on impossible hardware requests (e.g. more GPUs than exist).
    device = config.resolve_device()
    config.resolve_backend(device)
    config.resolve_amp(device)
    # A file where the checkpoint folder goes would fail only when the first
    # epoch's checkpoint is written. Looked for, not created: a run refused
    # for a bad patient below must leave nothing behind.
    checkpoints = Path(config.checkpoint_dir)
    for folder in (checkpoints, *checkpoints.parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"train.checkpoint_dir {checkpoints} cannot be a folder: "
                f"{folder} is a file; move it away or set train.checkpoint_dir"
            )
    for name in ("train", "val"):
        ReconstructionDataset(
            volumes, drr_sets, split[name], config.angles, config.hu_window
        ).check_all(desc=f"check {name} patients")
    job = TrainJob(
        dict(volumes),
        dict(drr_sets),
        dict(split),
        config,
        sink,
        model_factory,
        loss_factory,
        dataset_id,
    )
    with stop_on_sigterm():
        if config.world_size > 1:
            return spawn_ranks(run_training, job)
        target = (
            torch.device("cuda", torch.cuda.current_device())
            if device == "cuda"
            else torch.device("cpu")
        )
        result = run_training(job, Place(0, 1, target))
        assert result is not None  # rank 0 always returns its result
        return result
