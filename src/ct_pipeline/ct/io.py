"""Load CT volumes (NIfTI files, DICOM series) as RAS+ HU, and save them atomically.

Every loaded volume goes through the same checks: the
array is 3-D and finite, its values look like HU, out-of-field padding becomes
air, and the axes are permuted/flipped to RAS+ (nibabel's closest canonical)
with the spacing read from the affine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ct_pipeline.atomic import atomic_path
from ct_pipeline.ct.dicom import read_dicom_files, read_dicom_series
from ct_pipeline.ct.errors import CTInputError
from ct_pipeline.ct.volume import CTVolume

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# A CT always holds some air or lung; an array with nothing below this is not HU
# (e.g. raw stored values without RescaleIntercept, or a [0, 1] normalised image).
MAX_LOWEST_HU = -200.0
# The air check: voxels within this many HU of air, and the share expected.
AIR_PEAK_HALF_WIDTH_HU = 150.0
MIN_AIR_FRACTION = 0.01


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def load_ct(path: str | os.PathLike) -> CTVolume:
    """Read a NIfTI file or a DICOM series folder as a RAS+ CT volume in HU.

    Raises ``CTInputError`` naming ``path`` when the input is unreadable, not
    3-D, not finite or not in HU.
    """
    path = Path(path)
    if not path.exists():
        raise CTInputError(f"{path}: no such file or folder")
    if path.is_dir():
        hu, affine = read_dicom_series(path)
    elif is_nifti(path):
        hu, affine = _read_nifti(path)
    else:
        raise CTInputError(
            f"{path}: expected a .nii / .nii.gz file or a DICOM series folder"
        )
    hu, affine = to_canonical(hu, affine)
    hu = check_hu(hu, path)
    logger.debug("loaded %s: shape %s, affine diag %s", path, hu.shape, np.diag(affine))
    return CTVolume(hu=hu, affine=affine)


def load_dicom_files(files: Sequence[Path], folder: Path) -> CTVolume:
    """One DICOM series given as its slice files (loose in ``folder``), as ``load_ct``."""
    hu, affine = to_canonical(*read_dicom_files(files, folder))
    return CTVolume(hu=check_hu(hu, folder), affine=affine)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        image: Any = nib.load(path)  # a Nifti1/2Image; typed as the base class
        # float32 halves memory against get_fdata's float64; scl_slope/inter applied.
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises many types for damaged files
        raise CTInputError(
            f"{path}: unreadable or truncated NIfTI ({type(error).__name__}: {error})"
        ) from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CTInputError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    return data, np.asarray(image.affine, dtype=np.float64)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute array axes to the closest RAS+ order, updating the affine.

    Same result as ``nibabel.as_closest_canonical`` without building an image;
    an oblique affine keeps its rotation (only axis order and sign change).
    """
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(
        ornt, nib.orientations.axcodes2ornt(("R", "A", "S"))
    )
    canonical = nib.orientations.apply_orientation(data, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(canonical, dtype=np.float32), new_affine


def check_hu(data: np.ndarray, source: Path) -> np.ndarray:
    """Validate a 3-D array as HU and turn out-of-field padding into air."""
    if data.ndim != 3:
        raise CTInputError(f"{source}: expected a 3-D volume, got shape {data.shape}")
    if min(data.shape) < 2:
        raise CTInputError(f"{source}: volume too thin to be a CT, shape {data.shape}")
    finite = np.isfinite(data)
    if not finite.all():
        raise CTInputError(
            f"{source}: {int((~finite).sum())} NaN/inf voxels; a CT must be finite"
        )
    low, high = float(data.min()), float(data.max())
    if low >= 0.0 and high <= 1.0:
        raise CTInputError(
            f"{source}: values lie in [{low:g}, {high:g}], a normalised image, not HU"
        )
    if low > MAX_LOWEST_HU:
        raise CTInputError(
            f"{source}: lowest value {low:g} > {MAX_LOWEST_HU:g}: no air or lung, so "
            "not HU (raw stored values without RescaleSlope/Intercept?)"
        )
    # Scanners mark voxels outside the reconstruction circle with -2048 or -3024;
    # they attenuate like air.
    hu = np.maximum(data, np.float32(AIR_HU), dtype=np.float32)
    # A CT in HU shows an air peak near -1000 (outside the body, lungs, bowel);
    # an MRI or a mis-scaled image rarely does. A warning, not an error: a
    # tightly cropped CT may hold almost no air.
    air_fraction = float(np.mean(hu < AIR_HU + AIR_PEAK_HALF_WIDTH_HU))
    if air_fraction < MIN_AIR_FRACTION:
        logger.warning(
            "%s: only %.2f %% of voxels lie within %g HU of air (-1000): does this "
            "look like a CT in HU? (an MRI or a mis-scaled image would not)",
            source,
            100 * air_fraction,
            AIR_PEAK_HALF_WIDTH_HU,
        )
    return hu


def save_ct(ct: CTVolume, path: str | os.PathLike) -> None:
    """Write ``ct`` as a float32 NIfTI, atomically (temp file, then rename)."""
    path = Path(path)
    if not is_nifti(path):
        raise ValueError(f"save_ct writes .nii or .nii.gz, got {path.name!r}")
    image = nib.Nifti1Image(ct.hu.astype(np.float32, copy=False), ct.affine)
    image.set_qform(ct.affine, code=1)
    image.set_sform(ct.affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    with atomic_path(path) as temp:
        nib.save(image, temp)
