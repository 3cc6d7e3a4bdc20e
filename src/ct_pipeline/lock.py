"""Lock files: one run at a time writes a layer.

``.<name>.lock`` beside each layer a run writes names the run's host and
process. A second run that would write the same layer stops with a message
naming the holder; the lock of a process that is gone (on this host) is taken
over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


class LayerLocked(RuntimeError):
    """Another run, still alive, is writing a layer this run would write."""


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder(path: Path) -> dict[str, object]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # half-written by a killed run, or removed meanwhile
    return holder if isinstance(holder, dict) else {}


def _stale(holder: dict[str, object]) -> bool:
    """Held by a dead process of this host (or this very process: a session it
    interrupted never released it). A lock of another host is never stale:
    its process cannot be seen from here."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return not isinstance(pid, int) or pid == os.getpid() or not process_alive(pid)


def _take(target: Path) -> Path:
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    handle, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(handle, "w") as file:
        json.dump(me, file)
    try:
        try:
            os.link(tmp, path)  # fails if the lock exists: atomic test-and-set
            return path
        except FileExistsError:
            pass
        holder = _holder(path)
        if not _stale(holder):
            since = holder.get("since")
            started = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
                if isinstance(since, (int, float))
                else "an unknown time"
            )
            raise LayerLocked(
                f"{target} is being written by another run (process "
                f"{holder.get('pid', '?')} on host {holder.get('host', '?')}, "
                f"since {started}): wait for it to finish, or, if that run is "
                f"gone, delete {path}"
            )
        logger.warning(
            "%s was locked by process %s on %s, which is gone: lock taken over",
            target,
            holder.get("pid", "?"),
            holder.get("host", "?"),
        )
        os.replace(tmp, path)
        return path
    finally:
        Path(tmp).unlink(missing_ok=True)


def acquire(targets: Iterable[Path]) -> list[Path]:
    """Lock every target (in a fixed order); all or none. The lock files."""
    taken: list[Path] = []
    try:
        for target in sorted(set(targets)):
            taken.append(_take(target))
    except BaseException:
        release(taken)
        raise
    return taken


def release(locks: Iterable[Path]) -> None:
    """Remove the lock files this process holds (never another's)."""
    for path in locks:
        holder = _holder(path)
        if holder.get("pid") == os.getpid() and holder.get("host") == (
            socket.gethostname()
        ):
            path.unlink(missing_ok=True)
