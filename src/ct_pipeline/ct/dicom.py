"""Read one DICOM CT series (a folder of single-frame slices) into HU + RAS affine.

DICOM positions are in LPS mm. ImageOrientationPatient holds the direction of
increasing column index (along a row) then of increasing row index; the slice
normal is their cross product, and slices are ordered by their position along
it. PixelSpacing is (between rows, between columns).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ct_pipeline.ct.errors import CTInputError

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Relative tolerance on slice gaps: scanners round positions to ~0.01 mm, a
# missing slice doubles a gap.
GAP_TOLERANCE = 0.05
SKIPPED_NAMES = {"DICOMDIR"}


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file ("DICM" after the 128-byte preamble) or a ``.dcm``."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (array indexed [column, row, slice] in HU, voxel -> RAS mm affine)."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in SKIPPED_NAMES
    )
    return read_dicom_files(files, folder)


def read_dicom_files(
    files: Sequence[Path], folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The series of ``files`` (all in ``folder``, which errors name)."""
    if not files:
        raise CTInputError(f"{folder}: empty folder, expected a DICOM series")
    slices = [_read_slice(p) for p in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise CTInputError(
            f"{folder}: holds {len(series)} DICOM series ({sorted(series)}); "
            "put one series per folder"
        )
    if len(slices) < 2:
        raise CTInputError(f"{folder}: a volume needs at least 2 slices, got 1")

    first_path, first = slices[0]
    orientation = _floats(first, "ImageOrientationPatient", first_path, 6)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    shape = (int(first.Rows), int(first.Columns))
    spacing = _floats(first, "PixelSpacing", first_path, 2)
    for path, ds in slices[1:]:
        if not np.allclose(
            _floats(ds, "ImageOrientationPatient", path, 6), orientation, atol=1e-4
        ):
            raise CTInputError(
                f"{path}: ImageOrientationPatient differs from {first_path.name}'s "
                f"{orientation.tolist()}"
            )
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise CTInputError(
                f"{path}: slice size {(int(ds.Rows), int(ds.Columns))} differs from "
                f"{first_path.name}'s {shape}"
            )
        if not np.allclose(_floats(ds, "PixelSpacing", path, 2), spacing, rtol=1e-4):
            raise CTInputError(f"{path}: PixelSpacing differs from {first_path.name}'s")

    positions = np.stack(
        [_floats(ds, "ImagePositionPatient", p, 3) for p, ds in slices]
    )
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    _check_gaps(positions @ normal, [p for p, _ in slices], folder)

    volume = np.empty((shape[1], shape[0], len(slices)), dtype=np.float32)
    for index, (path, ds) in enumerate(slices):
        volume[:, :, index] = _slice_hu(ds, path).T

    # Third column from the end positions, not the normal: a gantry tilt then
    # gives the true (sheared) geometry instead of a silently wrong one.
    slice_step = (positions[-1] - positions[0]) / (len(slices) - 1)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * spacing[1]
    affine_lps[:3, 1] = col_dir * spacing[0]
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = positions[0]
    logger.debug(
        "%s: %d slices, spacing %s",
        folder,
        len(slices),
        np.linalg.norm(affine_lps[:3, :3], axis=0),
    )
    return volume, LPS_TO_RAS @ affine_lps


def _read_slice(path: Path) -> tuple[Path, pydicom.Dataset]:
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # Old files lack the 128-byte preamble; accept them only if they parse
            # into an image below.
            ds = pydicom.dcmread(path, force=True)
    except Exception as error:
        raise CTInputError(
            f"{path}: unreadable DICOM ({type(error).__name__}: {error})"
        ) from error
    if "PixelData" not in ds:
        raise CTInputError(f"{path}: not a DICOM image (no PixelData)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise CTInputError(
            f"{path}: multi-frame DICOM is not supported, export single-frame slices"
        )
    return path, ds


def _floats(ds: pydicom.Dataset, keyword: str, path: Path, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        raise CTInputError(
            f"{path}: missing or malformed {keyword} (need {count} numbers)"
        )
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _check_gaps(along_normal: np.ndarray, paths: list[Path], folder: Path) -> None:
    gaps = np.diff(along_normal)
    step = float(np.median(gaps))
    if step <= 0:
        raise CTInputError(f"{folder}: slices share positions (duplicate slices?)")
    bad = np.flatnonzero(np.abs(gaps - step) > GAP_TOLERANCE * step)
    if bad.size:
        i = int(bad[0])
        raise CTInputError(
            f"{folder}: uneven slice spacing, {gaps[i]:.3g} mm between {paths[i].name} "
            f"and {paths[i + 1].name}, expected {step:.3g} mm (missing or duplicate slice?)"
        )


def _slice_hu(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as error:  # e.g. truncated pixel data, missing codec
        raise CTInputError(
            f"{path}: cannot decode pixel data ({type(error).__name__}: {error})"
        ) from error
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
