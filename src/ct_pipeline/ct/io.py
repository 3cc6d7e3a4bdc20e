"""Load CT volumes (NIfTI, NRRD, MetaImage files, DICOM series) as RAS+ HU, and
save them atomically.

Every loaded volume goes through the same checks: the
array is 3-D and finite, its values look like HU, out-of-field padding becomes
air, and the axes are permuted/flipped to RAS+ (nibabel's closest canonical)
with the spacing read from the affine. An orientation is never guessed: a
NIfTI that declares none (qform and sform codes 0) is read only with an
explicit ``assume_orientation``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ct_pipeline.atomic import atomic_path
from ct_pipeline.ct.dicom import LPS_TO_RAS, read_dicom_files, read_dicom_series
from ct_pipeline.ct.errors import CTInputError
from ct_pipeline.ct.volume import CTVolume

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Read by SimpleITK (ITK's physical space is LPS whatever the file's own
# "space" field says; ITK converts). .nhdr / .mhd are detached headers whose
# data lies in the file they name.
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
CT_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# How a detached header names its data file: the key/value separator and the
# keys (lower case; NRRD accepts both spellings).
DATA_FILE_FIELDS = {
    ".nhdr": (":", ("data file", "datafile")),
    ".mhd": ("=", ("elementdatafile",)),
}
# Where the orientation of a NIfTI without qform/sform codes is declared.
ORIENTATION_PARAMETER = "raw.assume_orientation"
AXIS_PAIRS = ("RL", "AP", "SI")
# A CT always holds some air or lung; an array with nothing below this is not HU
# (e.g. raw stored values without RescaleIntercept, or a [0, 1] normalised image).
MAX_LOWEST_HU = -200.0
# The air check: voxels within this many HU of air, and the share expected.
AIR_PEAK_HALF_WIDTH_HU = 150.0
MIN_AIR_FRACTION = 0.01


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_ct_file(path: Path) -> bool:
    """A file in one of the CT formats read here (extension in any case)."""
    return path.name.lower().endswith(CT_SUFFIXES)


def ct_file_stem(name: str) -> str:
    """``name`` without its CT extension (``chest.nii.gz`` -> ``chest``)."""
    for suffix in sorted(CT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_orientation(codes: str) -> tuple[str, str, str]:
    """``"LPS"`` -> ``("L", "P", "S")``: where the array's i, j, k axes point.

    Raises ValueError unless ``codes`` holds one of R/L, A/P, S/I each.
    """
    axes = tuple(codes.upper()) if isinstance(codes, str) else ()
    if len(axes) != 3 or any(len(set(axes) & set(pair)) != 1 for pair in AXIS_PAIRS):
        raise ValueError(
            "expected three letters naming where the array axes point, one of "
            f"R/L, A/P, S/I each (e.g. LPS, RAS), got {codes!r}"
        )
    return (axes[0], axes[1], axes[2])


def load_ct(path: str | os.PathLike, assume_orientation: str | None = None) -> CTVolume:
    """Read a NIfTI, NRRD or MetaImage file or a DICOM series folder as a RAS+
    CT volume in HU.

    ``assume_orientation`` (e.g. ``"LPS"``) is used only for a NIfTI whose
    header declares no orientation (qform and sform codes 0); such a file
    without it is an error. Raises ``CTInputError`` naming ``path`` when the
    input is unreadable, not 3-D, not finite or not in HU.
    """
    path = Path(path)
    if not path.exists():
        raise CTInputError(f"{path}: no such file or folder")
    if path.is_dir():
        hu, affine = read_dicom_series(path)
    elif is_nifti(path):
        hu, affine = _read_nifti(path, assume_orientation)
    elif is_ct_file(path):
        hu, affine = _read_itk(path)
    else:
        raise CTInputError(
            f"{path}: expected a file ending in {', '.join(CT_SUFFIXES)} or a "
            "DICOM series folder"
        )
    hu, affine = to_canonical(hu, affine)
    hu = check_hu(hu, path)
    logger.debug("loaded %s: shape %s, affine diag %s", path, hu.shape, np.diag(affine))
    return CTVolume(hu=hu, affine=affine)


def load_dicom_files(files: Sequence[Path], folder: Path) -> CTVolume:
    """One DICOM series given as its slice files (loose in ``folder``), as ``load_ct``."""
    hu, affine = to_canonical(*read_dicom_files(files, folder))
    return CTVolume(hu=check_hu(hu, folder), affine=affine)


@dataclass(frozen=True)
class CTSource:
    """One CT on disk, read when called: a file or series folder at ``path``,
    or the DICOM ``slices`` loose in the folder ``path``."""

    path: Path
    slices: tuple[Path, ...] = ()
    assume_orientation: str | None = None

    def __call__(self) -> CTVolume:
        if self.slices:
            return load_dicom_files(self.slices, self.path)
        return load_ct(self.path, self.assume_orientation)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the CT is read from (a detached header's data files too)."""
        if self.slices:
            return self.slices
        if self.path.is_dir():
            return tuple(
                sorted(
                    p
                    for p in self.path.rglob("*")
                    if p.is_file() and not p.name.startswith(".")
                )
            )
        data = [self.path.with_name(name) for name in detached_data_files(self.path)]
        return (self.path, *(p for p in data if p.is_file()))

    def lacks_orientation(self) -> bool:
        """A NIfTI declaring no orientation, with none assumed (reads the header)."""
        if self.slices or self.assume_orientation or not is_nifti(self.path):
            return False
        return not _nifti_declares_orientation(_nifti_image(self.path))


def check_readable(path: Path) -> None:
    """Read the header of the CT file ``path`` (not its voxels); CTInputError
    naming the file when it cannot be read."""
    if is_nifti(path):
        _nifti_image(path)
    elif is_ct_file(path):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise CTInputError(
                f"{path}: unreadable header ({_itk_reason(error)})"
            ) from error


def detached_data_files(header: Path) -> list[str]:
    """Names of the data files a detached header (.nhdr, .mhd) points to.

    Those files are part of that CT, not CTs of their own. Lists and
    numbered-file patterns are not followed.
    """
    field = DATA_FILE_FIELDS.get(header.suffix.lower())
    if field is None:
        return []
    separator, keys = field
    try:
        text = header.read_text(errors="replace")
    except OSError:  # then reading the CT names the problem
        return []
    names = []
    for line in text.splitlines():
        key, sep, value = line.partition(separator)
        value = value.strip()
        if sep and key.strip().lower() in keys and value not in ("", "LOCAL", "LIST"):
            names.append(Path(value).name)
    return names


def _nifti_image(path: Path) -> Any:
    """The NIfTI image at ``path``, header read, voxels not yet (a Nifti1/2Image)."""
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises many types for damaged files
        raise CTInputError(
            f"{path}: unreadable or truncated NIfTI ({type(error).__name__}: {error})"
        ) from error


def _nifti_declares_orientation(image: Any) -> bool:
    header = image.header
    return int(header["qform_code"]) != 0 or int(header["sform_code"]) != 0


def _read_nifti(
    path: Path, assume_orientation: str | None
) -> tuple[np.ndarray, np.ndarray]:
    image = _nifti_image(path)
    try:
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
    if _nifti_declares_orientation(image):
        return data, np.asarray(image.affine, dtype=np.float64)
    # nibabel would fall back to a guessed affine; which way a scan's axes point
    # is then unknown (an LPS file would come out flipped front to back).
    if assume_orientation is None:
        raise CTInputError(
            f"{path}: qform_code and sform_code are both 0, so the file does not "
            "say which way its axes point; declare it with the parameter "
            f"{ORIENTATION_PARAMETER} (e.g. LPS or RAS) in conf/base/parameters_drr.yml"
            " or --params, or rewrite the file with its true affine"
        )
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    return data, _declared_affine(data.shape, zooms, assume_orientation)


def _declared_affine(
    shape: tuple[int, ...], zooms: np.ndarray, orientation: str
) -> np.ndarray:
    """Voxel -> RAS mm for axes pointing as ``orientation`` says, with the
    volume's centre at the origin (the file gives no position)."""
    ornt = nib.orientations.axcodes2ornt(parse_orientation(orientation))
    affine = np.eye(4)
    for axis, (world_axis, sign) in enumerate(ornt):
        affine[int(world_axis), axis] = sign * zooms[axis]
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _itk_reason(error: RuntimeError) -> str:
    """The last line of an ITK exception: its description, without the C++ trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An NRRD or MetaImage file (gzip or raw, attached or detached data)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise CTInputError(
            f"{path}: unreadable or truncated image ({_itk_reason(error)})"
        ) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CTInputError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel "
            "(a vector or colour image), expected one"
        )
    if image.GetDimension() != 3:
        raise CTInputError(
            f"{path}: expected a 3-D volume, got {image.GetDimension()}-D "
            f"{image.GetSize()}"
        )
    # SimpleITK's array is indexed [k, j, i]; the affine's columns are i, j, k.
    data = np.transpose(sitk.GetArrayViewFromImage(image), (2, 1, 0))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    return data.astype(np.float32), LPS_TO_RAS @ affine_lps


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
    image.header["descrip"] = ct.description.encode("ascii", "replace")[:80]
    with atomic_path(path) as temp:
        nib.save(image, temp)
