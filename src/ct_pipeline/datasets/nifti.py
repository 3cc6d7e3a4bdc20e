"""Kedro datasets for CT volumes: one NIfTI file, or a folder of CTs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.ct import save_ct
from ct_pipeline.ct.dicom import is_dicom_file
from ct_pipeline.ct.errors import CTInputError
from ct_pipeline.ct.io import (
    CT_SUFFIXES,
    CTSource,
    check_readable,
    ct_file_stem,
    detached_data_files,
    is_ct_file,
)
from ct_pipeline.datasets.folder import save_each, save_patients
from ct_pipeline.datasets.layers import PatientLayer, StagedLayer, Stored

logger = logging.getLogger(__name__)

NOT_A_CT = (
    f"not a CT: expected a file ending in {', '.join(CT_SUFFIXES)} (any case) "
    "or a folder holding one DICOM series"
)


def _is_dicom_series(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


class CTFolderDataset(StagedLayer, AbstractDataset[Mapping[str, Any], PatientLayer]):
    """Every CT in a folder: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``,
    ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) files and DICOM series folders.

    Loads lazily, like Kedro's PartitionedDataset: a dict of patient id ->
    ``CTSource`` (called, it reads the CT), so a folder of hundreds of CTs is
    read one at a time. Hidden files (``.gitkeep``) are ignored and an empty
    or missing folder loads as ``{}`` (PartitionedDataset refuses it, yet "no
    phantoms because real CTs exist" is a normal state). Saving writes
    ``<patient>.nii.gz`` per entry (a CTVolume or a loader of one, so a node
    can stream) into a staging folder that replaces the folder once all are
    written. ``read_only`` folders (user input) refuse to be written, and
    refuse to load while any entry is not a CT or has an unreadable header:
    the error lists every such entry and why, so that nothing is made from a
    folder the user believes holds their CTs. ``incremental`` folders are
    written a file at a time instead (``save_each``): each patient's file as
    soon as it is computed, the folder's other files kept.
    """

    def __init__(
        self,
        path: str,
        read_only: bool = False,
        incremental: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._read_only = read_only
        self._incremental = incremental
        self.metadata = metadata

    @property
    def layer_path(self) -> Path:
        return self._path

    def load(self) -> PatientLayer:
        folder = self._read_path()
        if not folder.is_dir():
            return PatientLayer()
        entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")]
        # The data file of a detached header (.nhdr, .mhd) belongs to that CT.
        detached = {
            name for e in entries if e.is_file() for name in detached_data_files(e)
        }
        sources: dict[str, CTSource] = {}
        loose_slices: list[Path] = []
        unusable: list[str] = []
        for entry in entries:
            if entry.name in detached:
                continue
            # Extensions match whatever their case (PATIENT1.NII.GZ is a NIfTI).
            is_file = entry.is_file() and is_ct_file(entry)
            if entry.is_file() and not is_file and is_dicom_file(entry):
                loose_slices.append(entry)
                continue
            if not (is_file or (entry.is_dir() and _is_dicom_series(entry))):
                unusable.append(f"{entry}: {NOT_A_CT}")
                continue
            if is_file and self._read_only:
                try:
                    check_readable(entry)
                except CTInputError as error:
                    unusable.append(str(error))
                    continue
            patient = ct_file_stem(entry.name)
            if patient in sources:
                raise DatasetError(
                    f"two CTs in {self._path} share the patient id '{patient}'"
                )
            sources[patient] = CTSource(entry)
        if unusable:
            listing = "\n".join(f"  - {reason}" for reason in unusable)
            if self._read_only:
                raise DatasetError(
                    f"{self._path} holds {len(unusable)} entries that cannot be "
                    "used as CTs; nothing was read or written. Move them out of "
                    f"the folder or fix them:\n{listing}"
                )
            logger.warning("not used as CTs, in %s:\n%s", self._path, listing)
        if loose_slices:
            # DICOM slices straight in the folder are one series, one patient
            # named after the folder (reading them checks they are one series).
            patient = self._path.name
            if patient in sources:
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
            sources[patient] = CTSource(self._path, slices=tuple(loose_slices))
        if self._read_only:
            # Raw CTs stay sources: the drr stage sets their assumed orientation.
            return PatientLayer(sources)
        # The pipeline's own layers: an unchanged patient's file can be linked.
        return PatientLayer(
            {p: Stored(s.files, s) for p, s in sources.items()},
            dataset_id=self._stamp(),
        )

    def save(self, data: Mapping[str, Any]) -> None:
        if self._read_only:
            raise DatasetError(
                f"{self._path} is input: the pipeline never writes to it"
            )
        if self._incremental:
            save_each(self._path, data, save_ct, ".nii.gz")
        else:
            save_patients(self.target_path, data, save_ct, ".nii.gz", self._commit)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "read_only": self._read_only,
            "incremental": self._incremental,
        }
