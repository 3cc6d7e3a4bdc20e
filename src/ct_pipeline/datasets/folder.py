"""A folder of one file per patient (DRR sets, previews), loaded lazily, saved whole."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.atomic import replaced_folder
from ct_pipeline.datasets.base import LocalFileDataset
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
) -> None:
    """Write every patient's value (or loader of one) as ``<patient><suffix>``
    with ``write(value, path)``, into a staging folder that replaces ``folder``
    only when all are written: an interrupted run keeps the previous folder
    whole, and no patient of an older run survives."""
    with replaced_folder(folder) as staging:
        # Lazy values are computed here, so this is where the work shows.
        for patient in progress(sorted(data), desc=f"write {folder}", unit="patient"):
            write(load_one(data[patient]), staging / f"{patient}{suffix}")


def _load(cls: type[LocalFileDataset[Any, Any]], path: Path) -> Any:
    return cls(str(path)).load()


class PatientFolderDataset(
    AbstractDataset[Mapping[str, Any], dict[str, Callable[[], Any]]]
):
    """``<folder>/<patient><suffix>``, each file read and written by ``dataset``.

    Loads a dict of patient id -> loader (picklable, a path each; nothing is
    read until called), like Kedro's PartitionedDataset. Saves a dict of
    values or of loaders of values (Kedro's lazy saving: a node returns
    callables and each patient is computed when written, one at a time).
    The files go to a staging folder that replaces the folder only when every
    one is written: an interrupted run leaves the previous sets complete, and
    no patient of an older run survives a rerun.
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

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._path.is_dir():
            return {}
        return {
            entry.name[: -len(self._suffix)]: partial(_load, self._dataset, entry)
            for entry in sorted(self._path.iterdir())
            if entry.is_file()
            and not entry.name.startswith(".")
            and entry.name.endswith(self._suffix)
        }

    def save(self, data: Mapping[str, Any]) -> None:
        save_patients(self._path, data, self._write, self._suffix)

    def _write(self, value: Any, path: Path) -> None:
        self._dataset(str(path)).save(value)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "dataset": self._dataset.__name__,
            "filename_suffix": self._suffix,
        }
