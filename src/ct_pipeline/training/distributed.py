"""Processes and collectives: process groups, spawned and torchrun ranks, error relay.

One host, world_size > 1: ``spawn_ranks`` starts one process per rank with
torch.multiprocessing (start method spawn: safe with CUDA and threads) on a
rendezvous port picked free at launch; rank 0 writes its result to a
temporary folder the parent reads back. A rank that raises leaves its error
there, so the parent re-raises it with its own type and message; a rank that
raises or dies makes the others stop, so a run never hangs. torchrun ranks
(drivers/torchrun.py) enter through ``distributed_worker`` too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ct_pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from ct_pipeline.training.job import NonFiniteLossError, Place, TrainJob, TrainResult

logger = logging.getLogger(__name__)

RESULT_FILE = "result.pt"
# What a rank runs: the training loop (loop.run_training), passed in so that
# this module, which the loop uses for its collectives, does not import it.
RankTraining = Callable[[TrainJob, Place], TrainResult | None]


def all_reduce(tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
    """In place across ranks when a process group exists; the identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


def broadcast_object(value: Any, place: Place) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not place.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_rank_weight_diff(module: nn.Module) -> float:
    """Largest difference between any rank's weights and rank 0's (a DDP sanity check)."""
    flat = nn.utils.parameters_to_vector(module.parameters()).detach()
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def cpu_share(world_size: int) -> int:
    """This process's share of the cores it may run on."""
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )
    return max(1, cores // world_size)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def distributed_worker(
    train: RankTraining,
    job: TrainJob,
    rank: int,
    local_rank: int,
    local_world_size: int,
    init_method: str,
    result_dir: Path | None,
) -> TrainResult | None:
    """Join the process group, train, and on failure leave the error where the parent can read it."""
    config = job.config
    try:
        device_type = config.resolve_device(local_world_size)
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        dist.init_process_group(
            config.resolve_backend(device_type),
            init_method=init_method,
            rank=rank,
            world_size=config.world_size,
            timeout=timedelta(seconds=config.dist_timeout_s),
        )
        try:
            result = train(job, Place(rank, config.world_size, device))
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


def spawn_ranks(train: RankTraining, job: TrainJob) -> TrainResult:
    """Run ``train`` on ``job.config.world_size`` processes of this host; rank 0's result."""
    world_size = job.config.world_size
    with tempfile.TemporaryDirectory(prefix="ct_pipeline_ddp_") as tmp:
        result_dir = Path(tmp)
        port = free_port()
        logger.info("starting %d workers (rendezvous 127.0.0.1:%d)", world_size, port)
        workers = mp.start_processes(
            _spawned_rank,
            args=(train, job, port, result_dir, os.getpid()),
            nprocs=world_size,
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


def _spawned_rank(
    rank: int,
    train: RankTraining,
    job: TrainJob,
    port: int,
    result_dir: Path,
    parent_pid: int,
) -> None:
    """Entry point of each process ``spawn_ranks`` starts."""
    die_with_parent(parent_pid)
    world_size = job.config.world_size
    # The launcher leaves threads alone; each worker takes its share of the cores.
    torch.set_num_threads(cpu_share(world_size))
    logging.basicConfig(level=logging.INFO)
    distributed_worker(
        train, job, rank, rank, world_size, f"tcp://127.0.0.1:{port}", result_dir
    )


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
