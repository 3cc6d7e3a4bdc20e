"""One value per patient, computed by a pool of worker processes.

The parent hands out one patient per worker at a time and gets each value
back as it finishes, so at most ``workers`` values are in memory at once,
whatever the number of patients.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class PatientFailed(RuntimeError):
    """A worker's computation of one patient's value raised."""


def _init_worker() -> None:
    # Each worker is one of several on the machine's cores: torch's own thread
    # pool in each of them would oversubscribe the cores.
    torch.set_num_threads(1)


def _call(make: Callable[[], Any]) -> Any:
    return make()


def computed_as_done(
    makers: Mapping[str, Callable[[], T]], workers: int
) -> Iterator[tuple[str, T]]:
    """``(key, makers[key]())`` for every key, computed in ``workers`` spawned
    processes (fork is unsafe once torch has started its threads), in the
    order they finish. Makers must pickle (module-level functions, partials).

    A failure stops the pool and raises ``PatientFailed`` naming the patient.
    """
    pending = iter(sorted(makers))
    running: dict[Future[T], str] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker
    ) as pool:

        def submit_next() -> None:
            key = next(pending, None)
            if key is not None:
                running[pool.submit(_call, makers[key])] = key

        for _ in range(workers):
            submit_next()
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    key = running.pop(future)
                    value = _result(future, key, running.values())
                    submit_next()
                    yield key, value
        finally:
            for future in running:
                future.cancel()


def _result(future: Future[T], key: str, others: Any) -> T:
    try:
        return future.result()
    except BrokenProcessPool as error:
        busy = ", ".join(sorted({key, *others}))
        raise PatientFailed(
            f"a worker process died (out of memory? killed?) while making "
            f"patient(s) {busy}; rerun with fewer drr.workers"
        ) from error
    except Exception as error:
        raise PatientFailed(
            f"patient {key}: {type(error).__name__}: {error}"
        ) from error
