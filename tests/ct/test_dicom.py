"""DICOM series written with pydicom: orientation, spacing, rescale, broken series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ct_pipeline.ct import CTInputError, load_ct

ROWS, COLS, SLICES = 5, 4, 6
ROW_SPACING, COL_SPACING, SLICE_MM = 0.8, 0.7, 2.5  # PixelSpacing = (rows, cols)
ORIGIN_LPS = np.array([-100.0, -120.0, -50.0])
SLOPE, INTERCEPT = 2.0, -1024.0
MARKER = (2, 1, 4)  # (row, column, slice) of the one bright pixel


def stored_values() -> np.ndarray:
    """(slice, row, column) stored integers: HU = 2 * stored - 1024."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 600, (SLICES, ROWS, COLS)).astype(np.uint16)
    row, col, index = MARKER
    stored[index, row, col] = 1500
    return stored


def write_series(folder: Path, sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    stored = stored_values()
    series_uid = generate_uid()
    # Files named in scrambled order: the reader must sort by position, not name.
    names = ["c", "f", "a", "e", "b", "d"]
    for index in range(SLICES):
        rows, cols = (sizes or {}).get(index, (ROWS, COLS))
        pixels = np.zeros((rows, cols), np.uint16)
        pixels[: min(rows, ROWS), : min(cols, COLS)] = stored[index, :rows, :cols]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = list(ORIGIN_LPS + [0.0, 0.0, index * SLICE_MM])
        ds.PixelSpacing = [ROW_SPACING, COL_SPACING]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{names[index]}.dcm", enforce_file_format=True)
    return folder


def test_series_loads_in_ras_with_spacing_rescale_and_world_position(tmp_path: Path):
    ct = load_ct(write_series(tmp_path / "series"))

    # DICOM columns run to patient Left, rows to Posterior: both flip for RAS+.
    assert ct.hu.shape == (COLS, ROWS, SLICES)
    np.testing.assert_allclose(ct.spacing_mm, (COL_SPACING, ROW_SPACING, SLICE_MM))
    hu_by_slice = SLOPE * stored_values().astype(np.float32) + INTERCEPT
    expected = np.flip(np.transpose(hu_by_slice, (2, 1, 0)), axis=(0, 1))
    np.testing.assert_array_equal(ct.hu, np.maximum(expected, -1024.0))

    row, col, index = MARKER
    marker_lps = ORIGIN_LPS + [col * COL_SPACING, row * ROW_SPACING, index * SLICE_MM]
    marker_ras = marker_lps * [-1.0, -1.0, 1.0]
    voxel = np.unravel_index(np.argmax(ct.hu), ct.hu.shape)
    np.testing.assert_allclose(ct.affine[:3, :3] @ voxel + ct.affine[:3, 3], marker_ras)
    assert np.all(np.diag(ct.affine)[:3] > 0)


def test_missing_slice_is_reported(tmp_path: Path):
    folder = write_series(tmp_path / "series")
    (folder / "e.dcm").unlink()  # slice 3 of 6
    with pytest.raises(CTInputError, match="uneven slice spacing") as caught:
        load_ct(folder)
    assert str(folder) in str(caught.value)


def test_differently_sized_slice_is_reported(tmp_path: Path):
    folder = write_series(tmp_path / "series", sizes={4: (ROWS + 1, COLS)})
    with pytest.raises(CTInputError, match="slice size") as caught:
        load_ct(folder)
    assert str(folder / "b.dcm") in str(caught.value)


def test_unreadable_file_in_series_is_named(tmp_path: Path):
    folder = write_series(tmp_path / "series")
    (folder / "d.dcm").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CTInputError) as caught:
        load_ct(folder)
    assert str(folder / "d.dcm") in str(caught.value)


def test_empty_folder_is_reported(tmp_path: Path):
    with pytest.raises(CTInputError, match="empty folder") as caught:
        load_ct(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_loose_slices_in_the_raw_folder_are_one_patient(tmp_path: Path):
    """Issue: loose *.dcm slices in data/01_raw were ignored and phantoms made."""
    import shutil

    from ct_pipeline.datasets import CTFolderDataset

    raw = tmp_path / "01_raw"
    write_series(raw)  # slices straight in the folder
    reference = load_ct(write_series(tmp_path / "elsewhere" / "series"))
    # A slice saved without the .dcm suffix is still recognised (the DICM magic).
    (raw / "c.dcm").rename(raw / "IM0001")
    write_series(raw / "patient_b")
    loaders = CTFolderDataset(str(raw), read_only=True).load()
    assert sorted(loaders) == ["01_raw", "patient_b"]
    ct = loaders["01_raw"]()
    np.testing.assert_array_equal(ct.hu, reference.hu)
    np.testing.assert_allclose(ct.affine, reference.affine)

    # Slices of two series loose in one folder: an error naming the folder.
    shutil.copy2(tmp_path / "elsewhere" / "series" / "a.dcm", raw / "other.dcm")
    with pytest.raises(CTInputError, match=r"01_raw: holds 2 DICOM series"):
        CTFolderDataset(str(raw), read_only=True).load()["01_raw"]()
