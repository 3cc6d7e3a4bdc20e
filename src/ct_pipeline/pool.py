"""Patients' files made side by side by a pool of worker processes.

Each worker makes one patient's value and writes its file itself, so the
value never travels back to the parent: the parent holds none, at most
``workers`` values exist at once (one per worker), and the writing (gzip of a
NIfTI, PNG encoding) is spread over the cores like the computing.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

# A patient's job: what makes its value, how a value is written, and where.
Job = tuple[Callable[[], Any], Callable[[Any, Path], None], Path]


class PatientFailed(RuntimeError):
    """A worker's making or writing of one patient's file raised."""


def _init_worker() -> None:
    # Each worker is one of several on the machine's cores: torch's own thread
    # pool in each of them would oversubscribe the cores.
    torch.set_num_threads(1)


def _make_and_write(
    make: Callable[[], Any], write: Callable[[Any, Path], None], path: Path
) -> None:
    write(make(), path)


def written_by_pool(jobs: Mapping[str, Job], workers: int) -> Iterator[str]:
    """Run every patient's job in ``workers`` spawned processes (fork is unsafe
    once torch has started its threads), yielding each patient as its file is
    written. A job must pickle (module-level functions, partials of them).

    The first failure cancels the patients not started, waits for those
    running and raises ``PatientFailed`` naming the patient.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker
    ) as pool:
        # One patient per worker at a time: a worker that dies is then known
        # to have been making one of ``running``.
        pending = iter(sorted(jobs))
        running: dict[Future[None], str] = {}

        def start_next() -> None:
            patient = next(pending, None)
            if patient is not None:
                running[pool.submit(_make_and_write, *jobs[patient])] = patient

        for _ in range(workers):
            start_next()
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=running.__getitem__):
                    patient = running.pop(future)
                    _check(future, patient, running.values())
                    start_next()
                    yield patient
        finally:
            for future in running:
                future.cancel()


def _check(future: Future[None], patient: str, others: Any) -> None:
    try:
        future.result()
    except BrokenProcessPool as error:
        busy = ", ".join(sorted({patient, *others}))
        raise PatientFailed(
            "a drr worker process died (out of memory? killed?) while making "
            f"one of: {busy}; rerun with fewer drr.workers"
        ) from error
    except Exception as error:
        raise PatientFailed(
            f"patient {patient}: {type(error).__name__}: {error}"
        ) from error
