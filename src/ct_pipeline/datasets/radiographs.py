"""Kedro dataset for a folder of patients' radiographs (input only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.radiographs import Film, find_patients, read_films


class RadiographFolderDataset(
    AbstractDataset[Mapping[str, Any], dict[str, Callable[[], list[Film]]]]
):
    """Patient id -> loader of its films (``ct_pipeline.radiographs.files``
    says which files make a patient); nothing is read until called."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Callable[[], list[Film]]]:
        try:
            patients = find_patients(self._path)
        except ValueError as error:
            raise DatasetError(str(error)) from error
        return {
            patient: partial(read_films, paths) for patient, paths in patients.items()
        }

    def save(self, data: Mapping[str, Any]) -> None:
        raise DatasetError(f"{self._path} is input: the pipeline never writes to it")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
