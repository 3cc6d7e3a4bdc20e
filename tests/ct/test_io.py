"""load_ct / save_ct on real NIfTI orientations and on every kind of bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ct_pipeline.ct import CTInputError, CTVolume, load_ct, save_ct

SHAPE = (6, 7, 8)
SPACING = (0.7, 1.1, 2.5)


def ras_volume() -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000.0, 1500.0, SHAPE).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 101.0)
    return CTVolume(hu=hu, affine=affine)


def reorient(ct: CTVolume, perm: tuple[int, int, int], flips: tuple[bool, ...]):
    """Array with new axis k = old axis perm[k] (reversed where flips[k]), and its affine.

    Built by hand (not with nibabel) so the test does not check nibabel against itself.
    """
    data = np.transpose(ct.hu, perm)
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1.0
    for k, (old_axis, flip) in enumerate(zip(perm, flips, strict=True)):
        if flip:
            data = np.flip(data, axis=k)
            new_to_old[old_axis, k] = -1.0
            new_to_old[old_axis, 3] = ct.hu.shape[old_axis] - 1
        else:
            new_to_old[old_axis, k] = 1.0
    return np.ascontiguousarray(data), ct.affine @ new_to_old


@pytest.mark.parametrize(
    ("codes", "perm", "flips", "suffix"),
    [
        ("RAS", (0, 1, 2), (False, False, False), ".nii"),
        ("LAS", (0, 1, 2), (True, False, False), ".nii.gz"),
        ("LPS", (0, 1, 2), (True, True, False), ".nii.gz"),
        ("PLS", (1, 0, 2), (True, True, False), ".nii"),
        ("SRA", (2, 0, 1), (False, False, False), ".nii.gz"),
        ("IPL", (2, 1, 0), (True, True, True), ".nii"),
    ],
)
def test_every_file_orientation_loads_to_the_same_ras_volume(
    tmp_path: Path, codes, perm, flips, suffix
):
    ct = ras_volume()
    data, affine = reorient(ct, perm, flips)
    assert "".join(nib.aff2axcodes(affine)) == codes  # the file really is `codes`
    path = tmp_path / f"ct_{codes}{suffix}"
    nib.save(nib.Nifti1Image(data, affine), path)

    loaded = load_ct(path)

    np.testing.assert_array_equal(loaded.hu, ct.hu)
    np.testing.assert_allclose(loaded.affine, ct.affine, atol=1e-5)
    np.testing.assert_allclose(loaded.spacing_mm, SPACING, rtol=1e-6)


def test_singleton_fourth_axis_is_squeezed(tmp_path: Path):
    ct = ras_volume()
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(ct.hu[..., None], ct.affine), path)
    assert load_ct(path).hu.shape == SHAPE


def test_scanner_padding_becomes_air(tmp_path: Path):
    ct = ras_volume()
    hu = ct.hu.copy()
    hu[0] = -3024.0
    hu[1] = -2048.0
    path = tmp_path / "padded.nii.gz"
    nib.save(nib.Nifti1Image(hu, ct.affine), path)
    loaded = load_ct(path)
    assert np.all(loaded.hu[:2] == -1024.0)
    np.testing.assert_array_equal(loaded.hu[2:], ct.hu[2:])


def test_save_then_load_round_trips_without_leftovers(tmp_path: Path):
    ct = ras_volume()
    path = tmp_path / "out" / "saved.nii.gz"
    save_ct(ct, path)
    save_ct(ct, path)  # overwriting is a rename too
    loaded = load_ct(path)
    np.testing.assert_array_equal(loaded.hu, ct.hu)
    np.testing.assert_allclose(loaded.affine, ct.affine, atol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["saved.nii.gz"]


def test_save_refuses_other_suffixes(tmp_path: Path):
    with pytest.raises(ValueError, match="nii"):
        save_ct(ras_volume(), tmp_path / "ct.npy")


def _write(tmp_path: Path, name: str, data: np.ndarray) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _truncated(tmp_path: Path) -> Path:
    path = _write(tmp_path, "cut.nii.gz", ras_volume().hu)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.nii"
    path.write_bytes(b"not a nifti at all" * 40)
    return path


def _gzip_of_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100))
    return path


def _with_nan(tmp_path: Path) -> Path:
    hu = ras_volume().hu.copy()
    hu[2, 3, 4] = np.nan
    return _write(tmp_path, "nan.nii.gz", hu)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated, "unreadable or truncated"),
        (_garbage, "unreadable or truncated"),
        (_gzip_of_garbage, "unreadable or truncated"),
        (lambda p: _write(p, "flat.nii.gz", np.zeros((5, 5), np.float32) - 900), "3-D"),
        (lambda p: _write(p, "t.nii.gz", np.zeros((4, 4, 4, 3), np.float32)), "3-D"),
        (_with_nan, "NaN"),
        (
            lambda p: _write(p, "unit.nii.gz", np.random.default_rng(1).random(SHAPE)),
            "normalised",
        ),
        (lambda p: _write(p, "raw.nii.gz", np.full(SHAPE, 24.0, np.float32)), "not HU"),
        (lambda p: p / "missing.nii.gz", "no such file"),
        (
            lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt",
            "expected a file ending in",
        ),
    ],
)
def test_bad_input_raises_ct_input_error_naming_the_file(tmp_path: Path, make, reason):
    path = make(tmp_path)
    with pytest.raises(CTInputError, match=reason) as caught:
        load_ct(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_image_without_an_air_peak_is_named_in_a_warning(tmp_path: Path, caplog):
    """Issue: an MRI-like volume (no air near -1000 HU) passed silently as a CT."""
    rng = np.random.default_rng(0)
    mri_like = rng.uniform(-300.0, 900.0, size=(12, 12, 12)).astype(np.float32)
    path = tmp_path / "t1_brain.nii.gz"
    nib.save(nib.Nifti1Image(mri_like, np.eye(4)), path)
    with caplog.at_level("WARNING", logger="ct_pipeline.ct.io"):
        load_ct(path)
    assert "t1_brain.nii.gz" in caplog.text and "look like a CT" in caplog.text
    caplog.clear()
    chest = mri_like.copy()
    chest[:, :4] = -1000.0  # a third of the field is air: a CT
    nib.save(nib.Nifti1Image(chest, np.eye(4)), path)
    with caplog.at_level("WARNING", logger="ct_pipeline.ct.io"):
        load_ct(path)
    assert "look like a CT" not in caplog.text
