"""Several layers (folders and files) of one run, replaced together.

A run stages every layer it writes beside the layer (``.<name>.partial-<token>``)
and swaps them in only when the whole run succeeded: a failed run leaves the
previous data set complete, every layer of it. The commit point is one atomic
rename, that of the *record* (the data set's manifest): once the new record is
in place, the staged folders stamped with its id are the data set, and a run
killed between that rename and the last folder's is finished by ``recover`` at
the next start; before it, the staged folders are leftovers and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ct_pipeline.atomic import STAMP, atomic_path, swap_in

logger = logging.getLogger(__name__)


def read_stamp(path: Path) -> str | None:
    """The data-set id a layer belongs to: its folder's stamp, or the
    ``dataset_id`` of a JSON file; None when it has none."""
    file = path / STAMP if path.is_dir() else path
    try:
        value = json.loads(file.read_text()).get("dataset_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value is not None else None


def write_stamp(folder: Path, dataset_id: str) -> None:
    with atomic_path(folder / STAMP) as tmp:
        tmp.write_text(json.dumps({"dataset_id": dataset_id}))


def _leftovers(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(targets: Iterable[Path], record: Path) -> None:
    """Finish a commit a killed run left half-done, then remove every staging
    and set-aside copy of ``targets`` (call it holding their locks)."""
    live = read_stamp(record)
    for target in targets:
        for staged in _leftovers(target, "partial"):
            if (
                live is not None
                and staged.is_dir()
                and read_stamp(staged) == live
                and read_stamp(target) != live
            ):
                swap_in(staged, target)
                logger.warning(
                    "%s: finished the commit of data set %s that an earlier "
                    "run left half-done",
                    target,
                    live,
                )
            else:
                logger.info("removing %s, left by an earlier run", staged)
                _remove(staged)
        for old in _leftovers(target, "old"):
            _remove(old)


class LayerCommit:
    """The layers one run stages, swapped in together by ``commit``."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self._token = secrets.token_hex(4)
        self._staged: dict[Path, Path] = {}

    def staging_path(self, target: Path) -> Path:
        """Where ``target``'s new version is written (registered for the commit)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.parent / f".{target.name}.partial-{self._token}"
        self._staged[target] = path
        return path

    def staged(self, target: Path) -> Path | None:
        """``target``'s staged version, if this run has written one."""
        path = self._staged.get(target)
        return path if path is not None and path.exists() else None

    @contextlib.contextmanager
    def staged_folder(self, target: Path) -> Iterator[Path]:
        """An empty folder for ``target``'s new files; removed on error."""
        staging = self.staging_path(target)
        _remove(staging)
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            _remove(staging)
            raise

    def commit(self) -> None:
        """The record first (the commit point), then every staged folder."""
        staged_record = self.staged(self.record)
        if staged_record is not None:
            os.replace(staged_record, self.record)
        for target, staged in sorted(self._staged.items()):
            if target != self.record and staged.exists():
                swap_in(staged, target)
        self._staged.clear()

    def abort(self) -> None:
        """Remove everything staged: the previous layers stay as they were."""
        for staged in self._staged.values():
            _remove(staged)
        self._staged.clear()
