"""A folder of one file per patient (DRR sets, previews), loaded lazily, saved whole."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.atomic import atomic_path, replaced_folder
from ct_pipeline.commit import LayerCommit, write_stamp
from ct_pipeline.datasets.base import LocalFileDataset
from ct_pipeline.datasets.layers import (
    PatientLayer,
    StagedLayer,
    Stored,
    layer_id,
    layer_workers,
)
from ct_pipeline.pool import written_by_pool
from ct_pipeline.progress import progress
from ct_pipeline.training.data import load_one


def _file_dataset(dotted: str) -> type[LocalFileDataset[Any, Any]]:
    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise DatasetError(f"no dataset class {dotted!r}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, LocalFileDataset)):
        raise DatasetError(f"{dotted} is not a one-file dataset of this project")
    return cls


def save_patients(
    folder: Path,
    data: Mapping[str, Any],
    write: Callable[[Any, Path], None],
    suffix: str,
    commit: LayerCommit | None = None,
) -> None:
    """Write every patient's value (or loader of one) as ``<patient><suffix>``
    with ``write(value, path)``, into a staging folder that replaces ``folder``
    only when all are written: an interrupted run keeps the previous folder
    whole, and no patient of an older run survives. Within a ``commit`` the
    staging folder waits for the commit of the run's other layers.

    A ``Stored`` file of the same kind (an unchanged patient's) is linked, not
    rewritten; ``data``'s data-set id, if any, is stamped on the folder.
    """
    staged = commit.staged_folder(folder) if commit else replaced_folder(folder)
    with staged as staging:
        dataset_id = layer_id(data)
        if dataset_id is not None:
            write_stamp(staging, dataset_id)
        linked = {
            p: v
            for p, v in data.items()
            if isinstance(v, Stored) and _same_kind(v, suffix)
        }
        to_make = {p: v for p, v in data.items() if p not in linked}
        # Lazy values are computed here, so this is where the work shows.
        with progress(total=len(data), desc=f"write {folder}", unit="patient") as bar:
            for patient in sorted(linked):
                _link(linked[patient].files[0], staging / f"{patient}{suffix}")
                bar.update()
            for _ in _made(to_make, write, staging, suffix, layer_workers(data)):
                bar.update()


def _made(
    values: Mapping[str, Any],
    write: Callable[[Any, Path], None],
    staging: Path,
    suffix: str,
    workers: int,
) -> Iterator[str]:
    """Write each patient's value into ``staging``: here, one at a time, or by
    a pool of ``workers`` processes where the values are loaders (lazy) and
    more than one is due. Yields each patient as it is written."""
    paths = {patient: staging / f"{patient}{suffix}" for patient in values}
    workers = min(workers, len(values))
    if workers > 1 and all(callable(v) for v in values.values()):
        jobs = {p: (values[p], write, paths[p]) for p in values}
        yield from written_by_pool(jobs, workers)
        return
    for patient in sorted(values):
        write(load_one(values[patient]), paths[patient])
        yield patient


def save_each(
    folder: Path,
    data: Mapping[str, Any],
    write: Callable[[Any, Path], None],
    suffix: str,
) -> None:
    """Write every patient's value (or loader of one) as ``<patient><suffix>``
    with ``write(value, path)``, each file atomically as soon as its value is
    computed, replacing only that patient's file: an interrupted run keeps the
    patients it finished, and the folder's other patients stay."""
    for patient in progress(sorted(data), desc=f"write {folder}", unit="patient"):
        with atomic_path(folder / f"{patient}{suffix}") as path:
            write(load_one(data[patient]), path)


def _same_kind(value: Stored, suffix: str) -> bool:
    return len(value.files) == 1 and value.files[0].name.endswith(suffix)


def _link(source: Path, path: Path) -> None:
    """A hard link (files are replaced by rename, never changed in place, so
    the old and new data sets may share one), else a copy."""
    try:
        os.link(source, path)
    except OSError:
        shutil.copy2(source, path)


def _load(cls: type[LocalFileDataset[Any, Any]], path: Path) -> Any:
    return cls(str(path)).load()


def _save(cls: type[LocalFileDataset[Any, Any]], value: Any, path: Path) -> None:
    cls(str(path)).save(value)


class PatientFolderDataset(
    StagedLayer, AbstractDataset[Mapping[str, Any], dict[str, Callable[[], Any]]]
):
    """``<folder>/<patient><suffix>``, each file read and written by ``dataset``.

    Loads a dict of patient id -> loader (picklable, a path each; nothing is
    read until called), like Kedro's PartitionedDataset. Saves a dict of
    values or of loaders of values (Kedro's lazy saving: a node returns
    callables and each patient is computed when written, one at a time).
    The files go to a staging folder that replaces the folder only when every
    one is written (see ``save_patients``): an interrupted run leaves the
    previous sets complete, and no patient of an older run survives a rerun.
    """

    def __init__(
        self,
        path: str,
        dataset: str,
        filename_suffix: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._dataset = _file_dataset(dataset)
        self._suffix = filename_suffix
        self.metadata = metadata

    @property
    def layer_path(self) -> Path:
        return self._path

    def load(self) -> PatientLayer:
        folder = self._read_path()
        if not folder.is_dir():
            return PatientLayer()
        return PatientLayer(
            {
                entry.name[: -len(self._suffix)]: Stored(
                    (entry,), partial(_load, self._dataset, entry)
                )
                for entry in sorted(folder.iterdir())
                if entry.is_file()
                and not entry.name.startswith(".")
                and entry.name.endswith(self._suffix)
            },
            dataset_id=self._stamp(),
        )

    def save(self, data: Mapping[str, Any]) -> None:
        # A module-level writer: worker processes get it pickled.
        write = partial(_save, self._dataset)
        save_patients(self.target_path, data, write, self._suffix, self._commit)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "dataset": self._dataset.__name__,
            "filename_suffix": self._suffix,
        }
