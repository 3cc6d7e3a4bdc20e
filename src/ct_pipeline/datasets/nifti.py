"""Kedro datasets for CT volumes: one NIfTI file, or a folder of CTs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.ct import CTVolume, load_ct, save_ct
from ct_pipeline.ct.dicom import is_dicom_file
from ct_pipeline.ct.io import load_dicom_files
from ct_pipeline.datasets.folder import save_patients
from ct_pipeline.datasets.layers import PatientLayer, StagedLayer, Stored

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_dicom_series(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _files(entry: Path) -> tuple[Path, ...]:
    """The files a CT is read from: the file, or a DICOM folder's files."""
    if entry.is_file():
        return (entry,)
    return tuple(
        sorted(
            p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
    )


def _patient_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class CTFolderDataset(
    StagedLayer, AbstractDataset[Mapping[str, Any], dict[str, Callable[[], CTVolume]]]
):
    """Every CT in a folder: ``*.nii``, ``*.nii.gz`` files and DICOM series folders.

    Loads lazily, like Kedro's PartitionedDataset: a dict of patient id ->
    loader, so a folder of hundreds of CTs is read one at a time. Hidden files
    (``.gitkeep``) are ignored and an empty or missing folder loads as ``{}``
    (PartitionedDataset refuses it, yet "no phantoms because real CTs exist"
    is a normal state). Saving writes ``<patient>.nii.gz`` per entry (a
    CTVolume or a loader of one, so a node can stream) into a staging folder
    that replaces the folder once all are written. ``read_only`` folders
    (raw input) refuse to be written.
    """

    def __init__(
        self, path: str, read_only: bool = False, metadata: dict[str, Any] | None = None
    ) -> None:
        self._path = Path(path)
        self._read_only = read_only
        self.metadata = metadata

    @property
    def layer_path(self) -> Path:
        return self._path

    def load(self) -> PatientLayer:
        folder = self._read_path()
        if not folder.is_dir():
            return PatientLayer()
        loaders = PatientLayer(dataset_id=self._stamp())
        loose_slices: list[Path] = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            # Extensions match whatever their case (PATIENT1.NII.GZ is a NIfTI).
            is_nifti = entry.is_file() and entry.name.lower().endswith(NIFTI_SUFFIXES)
            if entry.is_file() and not is_nifti and is_dicom_file(entry):
                loose_slices.append(entry)
                continue
            if not (is_nifti or (entry.is_dir() and _is_dicom_series(entry))):
                logger.warning(
                    "%s is not used: not a .nii / .nii.gz file (any case) nor a "
                    "folder holding one DICOM series",
                    entry,
                )
                continue
            patient = _patient_id(entry)
            if patient in loaders:
                raise DatasetError(
                    f"two CTs in {self._path} share the patient id '{patient}'"
                )
            loaders[patient] = Stored(_files(entry), partial(load_ct, entry))
        if loose_slices:
            # DICOM slices straight in the folder are one series, one patient
            # named after the folder (reading them checks they are one series).
            patient = self._path.name
            if patient in loaders:
                raise DatasetError(
                    f"the DICOM slices loose in {self._path} would be patient "
                    f"'{patient}', which another CT there already is; move them "
                    "into a folder of their own"
                )
            logger.info(
                "%d DICOM slices loose in %s: read as one series, patient '%s'",
                len(loose_slices),
                self._path,
                patient,
            )
            loaders[patient] = Stored(
                tuple(loose_slices),
                partial(load_dicom_files, tuple(loose_slices), self._path),
            )
        return loaders

    def save(self, data: Mapping[str, Any]) -> None:
        if self._read_only:
            raise DatasetError(
                f"{self._path} is input: the pipeline never writes to it"
            )
        save_patients(self._path, data, save_ct, ".nii.gz", self._commit)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "read_only": self._read_only}
