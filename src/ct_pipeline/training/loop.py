"""``train_model``: the one call the Kedro node makes; it starts the DDP workers itself.

world_size 1 trains in this process. world_size > 1 spawns one worker per
rank with torch.multiprocessing (start method spawn: safe with CUDA and
threads) on a rendezvous port picked free at launch; rank 0 writes its result
to a temporary folder the parent reads back. A worker that raises or dies
makes ``spawn`` terminate the others and fail, so a run never hangs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from ct_pipeline.training.checkpoint import load_checkpoint
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.sink import MetricSink
from ct_pipeline.training.worker import (
    RESULT_FILE,
    LossFactory,
    ModelFactory,
    NonFiniteLossError,
    TrainJob,
    TrainResult,
    build_loss_from_config,
    build_model_from_config,
    run_training,
    spawned_worker,
)

logger = logging.getLogger(__name__)


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


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train_model(
    volumes: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    split: dict[str, list[str]],
    config: TrainConfig,
    sink: MetricSink | None = None,
    model_factory: ModelFactory = build_model_from_config,
    loss_factory: LossFactory = build_loss_from_config,
) -> TrainResult:
    """Train on ``split["train"]``, validate on ``split["val"]``; returns rank 0's result.

    ``volumes`` and ``drr_sets`` map patient ids to picklable loaders (Kedro's
    partitions) or to values; ranks read patients as they need them. Every
    patient is read and checked once here, one at a time, before any rank
    starts or anything is written.

    ``model_factory(config, geometry, volume_size, spacing_mm)`` and
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
    backend = config.resolve_backend(device)
    config.resolve_amp(device)
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
    )
    with stop_on_sigterm():
        return _train(job, config, device, backend)


def _train(
    job: TrainJob, config: TrainConfig, device: str, backend: str
) -> TrainResult:
    if config.world_size == 1:
        target = (
            torch.device("cuda", torch.cuda.current_device())
            if device == "cuda"
            else torch.device("cpu")
        )
        result = run_training(job, rank=0, world_size=1, device=target)
        assert result is not None  # rank 0 always returns its result
        return result

    with tempfile.TemporaryDirectory(prefix="ct_pipeline_ddp_") as tmp:
        result_dir = Path(tmp)
        port = free_port()
        logger.info(
            "starting %d %s workers (rendezvous 127.0.0.1:%d)",
            config.world_size,
            backend,
            port,
        )
        workers = mp.start_processes(
            spawned_worker,
            args=(config.world_size, job, backend, port, result_dir, os.getpid()),
            nprocs=config.world_size,
            join=False,
            start_method="spawn",
        )
        try:
            while not workers.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            raise _worker_failure(result_dir, error) from error
        except BaseException:
            # Stopped (SIGTERM, Ctrl-C): the workers stop with the run, even
            # when this process lives on (a notebook).
            for process in workers.processes:
                if process.is_alive():
                    process.terminate()
            for process in workers.processes:
                process.join()
            raise
        return TrainResult.from_payload(load_checkpoint(result_dir / RESULT_FILE))


def _worker_failure(result_dir: Path, error: Exception) -> Exception:
    """The first failing rank's own error, re-raised in the parent with its type where it is ours."""
    reports = sorted(
        (json.loads(path.read_text()) for path in result_dir.glob("error_rank*.json")),
        key=lambda report: report["rank"],
    )
    if not reports:
        return RuntimeError(f"a DDP worker died without reporting an error: {error}")
    dead = getattr(error, "error_index", None)
    if isinstance(error, mp.ProcessExitedException) and all(
        report["rank"] != dead for report in reports
    ):
        # The cause is the rank that died silently; the others' reports (a
        # broken connection to it) are consequences, named after it.
        return RuntimeError(
            f"DDP rank {dead} died without reporting an error ({error}); "
            f"then rank {reports[0]['rank']}: {reports[0]['message']}"
        )
    first = reports[0]
    message = f"rank {first['rank']}: {first['message']}"
    if first["type"] == NonFiniteLossError.__name__:
        return NonFiniteLossError(message)
    if first["type"] == ValueError.__name__:
        return ValueError(message)
    return RuntimeError(f"DDP worker failed with {first['type']}: {message}")
