"""The drr pipeline's first nodes: raw CTs read with a declared orientation,
and phantoms made only when the raw folder is empty, never over real CTs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ct_pipeline.ct import CTInputError
from ct_pipeline.ct.io import CTSource
from ct_pipeline.pipelines.drr.nodes import make_phantoms, read_raw_cts

PHANTOMS = {
    "count": 3,
    "seed": 1,
    "size_vox": 16,
    "spacing_mm": 24.0,
    "replace_real_ct": False,
}
REAL_DATA_SET = {"source": "raw", "patients": ["alice", "bob"]}


def _undeclared_nifti(path: Path) -> CTSource:
    hu = np.full((8, 8, 8), -1000.0, dtype=np.float32)
    hu[2:6, 2:6, 2:6] = 40.0
    nib.save(nib.Nifti1Image(hu, None), path)
    return CTSource(path)


def test_raw_ct_without_orientation_names_every_file_and_the_parameter(tmp_path):
    raw = {
        "a": _undeclared_nifti(tmp_path / "a.nii"),
        "b": _undeclared_nifti(tmp_path / "b.nii.gz"),
    }
    with pytest.raises(CTInputError, match="raw.assume_orientation") as caught:
        read_raw_cts(raw, {"assume_orientation": None})
    assert str(tmp_path / "a.nii") in str(caught.value)
    assert str(tmp_path / "b.nii.gz") in str(caught.value)

    sources = read_raw_cts(raw, {"assume_orientation": "LPS"})
    assert sources["a"]().hu.shape == (8, 8, 8)


def test_phantoms_are_made_when_the_raw_folder_is_empty():
    assert len(make_phantoms({}, None, PHANTOMS)) == 3
    assert len(make_phantoms({}, {"source": "phantom"}, PHANTOMS)) == 3


def test_phantoms_never_silently_replace_a_data_set_of_real_cts():
    """Issue: emptying data/01_raw (or leaving only unreadable files there)
    replaced the user's real-CT layers with phantoms."""
    with pytest.raises(ValueError, match="phantoms.replace_real_ct") as caught:
        make_phantoms({}, REAL_DATA_SET, PHANTOMS)
    assert "2 real CT(s) (alice, bob)" in str(caught.value)

    asked = make_phantoms({}, REAL_DATA_SET, PHANTOMS | {"replace_real_ct": True})
    assert len(asked) == 3


def test_no_phantoms_when_the_raw_folder_holds_cts(tmp_path):
    raw = {"a": CTSource(tmp_path / "a.nii.gz")}
    assert make_phantoms(raw, REAL_DATA_SET, PHANTOMS) == {}
