"""NRRD and MetaImage files load to the same RAS+ volume as the NIfTI of the
same scan, and a NIfTI that declares no orientation is never guessed.

The NRRD and MetaImage headers are written here by hand, from the formats'
specifications, so the tests check the reader against the formats rather than
against itself; the NIfTI twin is written with nibabel.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ct_pipeline.ct import CTInputError, load_ct

SHAPE = (6, 7, 8)
SPACING = (0.8, 1.25, 2.5)
# Array axes i, j, k point (in LPS) toward -P (anterior), L and -S (inferior):
# permuted and flipped, plus a 10 degree turn about the vertical axis.
_TURN = np.deg2rad(10.0)
_ROTATE = np.array(
    [
        [np.cos(_TURN), -np.sin(_TURN), 0.0],
        [np.sin(_TURN), np.cos(_TURN), 0.0],
        [0.0, 0.0, 1.0],
    ]
)
DIRECTIONS_LPS = _ROTATE @ np.array(
    [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
)  # columns: the directions of i, j, k
ORIGIN_LPS = np.array([-120.5, 87.25, -310.0])
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
MARKER = (1, 5, 2)  # a file index holding the brightest voxel
MARKER_HU = 3000


def _scan() -> np.ndarray:
    """int16 HU indexed [i, j, k] as stored, a bright marker at MARKER."""
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 1500, size=SHAPE).astype(np.int16)
    hu[MARKER] = MARKER_HU
    return hu


def _vector(values: np.ndarray) -> str:
    return "(" + ",".join(f"{v:.17g}" for v in values) + ")"


def _affine_ras(directions_lps: np.ndarray = DIRECTIONS_LPS) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ directions_lps * np.asarray(SPACING)
    affine[:3, 3] = LPS_TO_RAS @ ORIGIN_LPS
    return affine


def _write_nifti_twin(tmp_path: Path, hu: np.ndarray) -> Path:
    path = tmp_path / "twin.nii.gz"
    nib.save(nib.Nifti1Image(hu, _affine_ras()), path)
    return path


def _nrrd_header(space: str, encoding: str, data_file: str | None = None) -> str:
    to_space = LPS_TO_RAS if space == "right-anterior-superior" else np.eye(3)
    directions = to_space @ DIRECTIONS_LPS * np.asarray(SPACING)
    lines = [
        "NRRD0004",
        "# written by hand for the test",
        "type: short",
        "dimension: 3",
        f"space: {space}",
        "sizes: " + " ".join(str(n) for n in SHAPE),
        "space directions: " + " ".join(_vector(directions[:, a]) for a in range(3)),
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {encoding}",
        f"space origin: {_vector(to_space @ ORIGIN_LPS)}",
    ]
    if data_file is not None:
        lines.append(f"data file: {data_file}")
    return "\n".join(lines) + "\n"


def _raw_bytes(hu: np.ndarray) -> bytes:
    # Both formats store the first axis fastest: Fortran order of [i, j, k].
    return hu.astype("<i2").tobytes(order="F")


def _write_nrrd(tmp_path: Path, hu: np.ndarray, space: str) -> Path:
    path = tmp_path / "scan.nrrd"
    header = _nrrd_header(space, "gzip").encode() + b"\n"
    path.write_bytes(header + gzip.compress(_raw_bytes(hu)))
    return path


def _write_nhdr(tmp_path: Path, hu: np.ndarray) -> Path:
    path = tmp_path / "scan.nhdr"
    (tmp_path / "scan.raw.gz").write_bytes(gzip.compress(_raw_bytes(hu)))
    path.write_text(_nrrd_header("left-posterior-superior", "gzip", "scan.raw.gz"))
    return path


def _metaimage_header(data_file: str) -> str:
    # TransformMatrix lists the direction of each array axis in turn (LPS).
    return "\n".join(
        [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "CompressedData = False",
            "TransformMatrix = "
            + " ".join(f"{v:.17g}" for v in DIRECTIONS_LPS.T.ravel()),
            "Offset = " + " ".join(f"{v:.17g}" for v in ORIGIN_LPS),
            "AnatomicalOrientation = RAI",
            "ElementSpacing = " + " ".join(f"{v:g}" for v in SPACING),
            "DimSize = " + " ".join(str(n) for n in SHAPE),
            "ElementType = MET_SHORT",
            f"ElementDataFile = {data_file}",
        ]
    )


def _write_mha(tmp_path: Path, hu: np.ndarray) -> Path:
    path = tmp_path / "scan.mha"
    path.write_bytes((_metaimage_header("LOCAL") + "\n").encode() + _raw_bytes(hu))
    return path


def _write_mhd(tmp_path: Path, hu: np.ndarray) -> Path:
    path = tmp_path / "scan.mhd"
    (tmp_path / "scan.raw").write_bytes(_raw_bytes(hu))
    path.write_text(_metaimage_header("scan.raw") + "\n")
    return path


@pytest.mark.parametrize(
    "write",
    [
        lambda p, hu: _write_nrrd(p, hu, "left-posterior-superior"),
        lambda p, hu: _write_nrrd(p, hu, "right-anterior-superior"),
        _write_nhdr,
        _write_mha,
        _write_mhd,
    ],
    ids=["nrrd-lps-gzip", "nrrd-ras-gzip", "nhdr-detached", "mha", "mhd-detached"],
)
def test_itk_formats_load_like_their_nifti_twin(tmp_path: Path, write):
    hu = _scan()
    loaded = load_ct(write(tmp_path, hu))
    twin = load_ct(_write_nifti_twin(tmp_path, hu))

    np.testing.assert_array_equal(loaded.hu, twin.hu)
    np.testing.assert_allclose(loaded.affine, twin.affine, atol=1e-6)
    # RAS+ order: R from j (toward L), A from i (toward -P), S from k.
    np.testing.assert_allclose(
        loaded.spacing_mm, (SPACING[1], SPACING[0], SPACING[2]), rtol=1e-6
    )
    # The marker sits where the header puts it in the world, in RAS mm.
    expected_ras = LPS_TO_RAS @ (
        ORIGIN_LPS + DIRECTIONS_LPS @ (np.asarray(MARKER) * SPACING)
    )
    brightest = np.unravel_index(np.argmax(loaded.hu), loaded.hu.shape)
    world = loaded.affine @ np.array([*brightest, 1.0])
    np.testing.assert_allclose(world[:3], expected_ras, atol=1e-6)


def test_a_truncated_nrrd_is_named(tmp_path: Path):
    path = _write_nrrd(tmp_path, _scan(), "left-posterior-superior")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CTInputError, match="unreadable or truncated") as caught:
        load_ct(path)
    assert str(path) in str(caught.value)


def _write_undeclared(tmp_path: Path, hu: np.ndarray) -> Path:
    image = nib.Nifti1Image(hu, None)
    image.header.set_zooms(SPACING)
    assert image.header["qform_code"] == 0 and image.header["sform_code"] == 0
    path = tmp_path / "no_orientation.nii"
    nib.save(image, path)
    return path


def test_a_nifti_without_orientation_codes_is_an_error_naming_the_parameter(
    tmp_path: Path,
):
    path = _write_undeclared(tmp_path, _scan())
    with pytest.raises(CTInputError, match="raw.assume_orientation") as caught:
        load_ct(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("codes", ["LPS", "RAS", "PLI"])
def test_an_assumed_orientation_reads_the_axes_as_declared(tmp_path: Path, codes):
    hu = _scan()
    loaded = load_ct(_write_undeclared(tmp_path, hu), assume_orientation=codes)

    # The same voxels, declared with that orientation in a proper header.
    affine = np.eye(4)
    for axis, (world_axis, sign) in enumerate(nib.orientations.axcodes2ornt(codes)):
        affine[int(world_axis), axis] = sign * SPACING[axis]
    declared = tmp_path / "declared.nii"
    nib.save(nib.Nifti1Image(hu, affine), declared)
    twin = load_ct(declared)

    np.testing.assert_array_equal(loaded.hu, twin.hu)
    np.testing.assert_allclose(loaded.affine[:3, :3], twin.affine[:3, :3], atol=1e-6)


@pytest.mark.parametrize("codes", ["LPA", "XYZ", "LP", "RASR", 3])
def test_a_malformed_orientation_is_refused(tmp_path: Path, codes):
    path = _write_undeclared(tmp_path, _scan())
    with pytest.raises(ValueError, match="R/L, A/P, S/I"):
        load_ct(path, assume_orientation=codes)
