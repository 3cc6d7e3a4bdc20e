"""Kedro datasets for CT volumes: one NIfTI file, or a raw folder of CTs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.ct import CTVolume, load_ct, save_ct
from ct_pipeline.datasets.base import LocalFileDataset

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiDataset(LocalFileDataset[CTVolume, CTVolume]):
    """One CT volume as a NIfTI file (HU, RAS+ affine); saves atomically."""

    def load(self) -> CTVolume:
        return load_ct(self._filepath)

    def save(self, data: CTVolume) -> None:
        save_ct(data, self._filepath)


def _is_dicom_series(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _patient_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class RawCTFolderDataset(AbstractDataset[None, dict[str, Callable[[], CTVolume]]]):
    """Every CT in a folder: ``*.nii``, ``*.nii.gz`` files and DICOM series folders.

    Loads lazily, like Kedro's PartitionedDataset: a dict of patient id ->
    loader, so a folder of hundreds of CTs is read one at a time. Hidden files
    (``.gitkeep``) are ignored, so an empty folder loads as ``{}``.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Callable[[], CTVolume]]:
        if not self._path.is_dir():
            return {}
        loaders: dict[str, Callable[[], CTVolume]] = {}
        for entry in sorted(self._path.iterdir()):
            if entry.name.startswith("."):
                continue
            is_nifti = entry.is_file() and entry.name.endswith(NIFTI_SUFFIXES)
            if not (is_nifti or (entry.is_dir() and _is_dicom_series(entry))):
                continue
            patient = _patient_id(entry)
            if patient in loaders:
                raise DatasetError(
                    f"two CTs in {self._path} share the patient id '{patient}'"
                )
            loaders[patient] = partial(load_ct, entry)
        return loaders

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._path} is raw input: the pipeline never writes to it"
        )

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
