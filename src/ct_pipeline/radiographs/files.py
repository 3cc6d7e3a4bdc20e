"""Which films belong to which patient, and reading them.

A patient is a subfolder (its name is the id; every film in it is one
view) or loose files named ``<patient>_<view>.<ext>`` (the id is the name up
to the last underscore). DICOM files end in ``.dcm`` or carry the DICOM
preamble; PNG / TIFF films need their ``.json`` sidecar.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ct_pipeline.ct.dicom import is_dicom_file
from ct_pipeline.radiographs.dicom import read_dicom_film
from ct_pipeline.radiographs.film import Film
from ct_pipeline.radiographs.sidecar import IMAGE_SUFFIXES, read_image_film

logger = logging.getLogger(__name__)


def _films_in(entries: Sequence[Path]) -> list[Path]:
    films = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(entry):
            films.append(entry)
        elif entry.suffix.lower() != ".json":
            logger.warning("%s: neither a DICOM film nor a PNG/TIFF; skipped", entry)
    return films


def find_patients(folder: Path) -> dict[str, list[Path]]:
    """Patient id -> its film files, in name order."""
    if not folder.is_dir():
        return {}
    entries = sorted(folder.iterdir())
    patients: dict[str, list[Path]] = {}
    for path in _films_in(entries):
        patients.setdefault(path.stem.rpartition("_")[0] or path.stem, []).append(path)
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            if sub.name in patients:
                raise ValueError(
                    f"{sub}: patient {sub.name!r} is both a folder and loose files"
                )
            films = _films_in(sorted(sub.iterdir()))
            if films:
                patients[sub.name] = films
    return patients


def read_film(path: Path) -> Film:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_film(path)
    return read_dicom_film(path)


def read_films(paths: Sequence[Path]) -> list[Film]:
    return [read_film(Path(p)) for p in paths]
