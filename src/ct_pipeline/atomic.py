"""Atomic file writes: a reader sees the old file or the new one, never half.

The one writer of the project: datasets, checkpoints and figures all go
through ``atomic_path``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The hidden file in a layer's folder naming the data set its files belong to.
STAMP = ".dataset.json"


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _staging_folder(target: Path) -> Path:
    """A hidden folder *beside* the target's folder, on the same file system.

    Not inside it: a dataset that lists its folder (recursively, by suffix)
    must never see a half-written or abandoned temporary file as data.
    """
    parent = target.parent.resolve()
    return parent.parent / f".{parent.name}.partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; fsync it and rename it over ``path`` on success.

    The temporary file keeps the destination's name (some writers, nibabel and
    numpy, choose the format from its suffixes) in a staging folder beside the
    destination's folder, so the final ``os.replace`` is a same-file-system
    rename (atomic on POSIX). On error the temporary file is removed and an
    existing ``path`` is left untouched. The file gets the permissions the
    umask allows (mkstemp's 0600 would lock out a shared team folder).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(target)
    while True:  # another writer may remove an empty staging folder meanwhile
        staging.mkdir(parents=True, exist_ok=True)
        try:
            folder = Path(tempfile.mkdtemp(dir=staging))
            break
        except FileNotFoundError:
            continue
    tmp = folder / target.name
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        folder.rmdir()
        with contextlib.suppress(OSError):  # another writer may be using it
            staging.rmdir()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def replaced_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder that replaces the folder ``path`` on success.

    For datasets written whole (a folder of one file per patient): a run that
    fails or is killed half-way leaves the previous folder complete and
    untouched, never a mix of old and new files. The staging folder is
    hidden beside ``path`` (a reader of ``path`` never sees it); see ``swap_in``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent)
    )
    try:
        yield staging
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` in the place of the folder ``target``.

    The old folder's hidden files (``.gitkeep``) are carried over, but never
    its data-set stamp: that says which data set the *old* files belong to.
    The swap is two renames, old folder aside and new folder in; the old one
    is then removed.
    """
    if target.is_dir():
        for hidden in target.glob(".*"):
            if hidden.name != STAMP and not (staging / hidden.name).exists():
                os.replace(hidden, staging / hidden.name)
    old = target.parent / f".{target.name}.old-{staging.name[-8:]}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
