"""PatientFolderDataset: lazy loads, lazy saves, and a folder replaced only when complete."""

import numpy as np
import pytest

from ct_pipeline.datasets import PatientFolderDataset
from ct_pipeline.drr import DRRSet, Geometry

GEOMETRY = Geometry(detector_px=(4, 4), pixel_mm=100.0)


def _drr(value: float) -> DRRSet:
    return DRRSet(
        np.full((2, 4, 4), value, dtype=np.float32),
        np.array([0.0, 90.0]),
        GEOMETRY,
        np.zeros(3),
    )


def _folder(path):
    return PatientFolderDataset(
        str(path), dataset="ct_pipeline.datasets.DRRSetDataset", filename_suffix=".npz"
    )


def test_lazy_values_are_written_and_loaded_back_lazily(tmp_path):
    made = []

    def maker(pid, value):
        def make():
            made.append(pid)
            return _drr(value)

        return make

    folder = _folder(tmp_path / "drr")
    folder.save({"b": maker("b", 2.0), "a": _drr(1.0)})
    assert made == ["b"]
    loaders = folder.load()
    assert sorted(loaders) == ["a", "b"]
    assert loaders["b"]().projections[0, 0, 0] == 2.0
    (tmp_path / "drr" / ".gitkeep").touch()
    folder.save({"c": _drr(3.0)})  # a rerun: no patient of the old run survives
    assert sorted(folder.load()) == ["c"]
    assert (tmp_path / "drr" / ".gitkeep").exists()


def test_a_failed_save_leaves_the_previous_folder_whole(tmp_path):
    folder = _folder(tmp_path / "drr")
    folder.save({"a": _drr(1.0), "b": _drr(2.0)})
    before = {p.name: p.read_bytes() for p in (tmp_path / "drr").iterdir()}

    def broken():
        raise RuntimeError("killed half-way")

    with pytest.raises(Exception, match="killed half-way"):
        folder.save({"a": _drr(5.0), "b": broken})
    after = {p.name: p.read_bytes() for p in (tmp_path / "drr").iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["drr"]  # no staging left


def test_an_unknown_file_dataset_is_refused(tmp_path):
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="no dataset class"):
        PatientFolderDataset(str(tmp_path), "ct_pipeline.datasets.Nope", ".npz")
