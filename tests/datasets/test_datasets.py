"""The custom Kedro datasets round-trip their data and never leave half-written files."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from ct_pipeline.ct import CTVolume, CubeGrid, save_ct
from ct_pipeline.datasets import (
    CTFolderDataset,
    DRRSetDataset,
    FigureDataset,
    ModelBundleDataset,
    PatientFolderDataset,
    PngDataset,
)
from ct_pipeline.datasets.layers import PatientLayer
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.preview import preview_strip
from ct_pipeline.inference import ModelBundle


def _volume() -> CTVolume:
    hu = np.full((6, 7, 8), -1000.0, dtype=np.float32)
    hu[2:4, 2:5, 3:6] = 40.0
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 7.0]
    return CTVolume(hu=hu, affine=affine)


def test_ct_folder_round_trip_replaces_stale_patients(tmp_path):
    dataset = CTFolderDataset(str(tmp_path))
    dataset.save({"old": _volume()})
    dataset.save({"p1": _volume(), "p2": _volume})  # a value or a lazy loader
    loaded = dataset.load()
    assert sorted(loaded) == ["p1", "p2"]
    np.testing.assert_allclose(loaded["p1"]().hu, _volume().hu)
    np.testing.assert_allclose(loaded["p2"]().affine, _volume().affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1.nii.gz", "p2.nii.gz"]


def test_read_only_ct_folder_refuses_writes(tmp_path):
    with pytest.raises(DatasetError, match="never writes"):
        CTFolderDataset(str(tmp_path), read_only=True).save({"p1": _volume()})


def test_missing_ct_folder_loads_as_nothing(tmp_path):
    assert CTFolderDataset(str(tmp_path / "absent")).load() == {}


def test_drrset_dataset_round_trip(tmp_path):
    geometry = Geometry(detector_px=(3, 4), pixel_mm=2.0, beam="parallel")
    drr = DRRSet(
        projections=np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        angles_deg=np.array([0.0, 90.0]),
        geometry=geometry,
        isocentre_mm=np.array([1.0, 2.0, 3.0]),
    )
    dataset = DRRSetDataset(str(tmp_path / "p1.npz"))
    dataset.save(drr)
    loaded = dataset.load()
    np.testing.assert_array_equal(loaded.projections, drr.projections)
    np.testing.assert_array_equal(loaded.angles_deg, drr.angles_deg)
    np.testing.assert_array_equal(loaded.isocentre_mm, drr.isocentre_mm)
    assert loaded.geometry == geometry


def test_drrset_dataset_names_a_corrupt_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="broken.npz"):
        DRRSetDataset(str(path)).load()


def test_raw_folder_finds_nifti_and_dicom_series_and_skips_hidden(tmp_path):
    save_ct(_volume(), tmp_path / "alice.nii.gz")
    save_ct(_volume(), tmp_path / "bob.nii")
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "IM0001.dcm").write_bytes(b"")
    (tmp_path / ".gitkeep").write_text("")
    (tmp_path / "notes.txt").write_text("not a CT")
    loaders = CTFolderDataset(str(tmp_path)).load()
    assert sorted(loaders) == ["alice", "bob", "carol"]
    np.testing.assert_allclose(loaders["alice"]().hu, _volume().hu)


def test_raw_folder_rejects_two_files_for_one_patient(tmp_path):
    save_ct(_volume(), tmp_path / "alice.nii.gz")
    save_ct(_volume(), tmp_path / "alice.nii")
    with pytest.raises(DatasetError, match="alice"):
        CTFolderDataset(str(tmp_path)).load()


def test_empty_raw_folder_loads_as_nothing(tmp_path):
    (tmp_path / ".gitkeep").write_text("")
    assert CTFolderDataset(str(tmp_path)).load() == {}


def _bundle(**changes) -> ModelBundle:
    bundle = ModelBundle(
        state_dict={"w": torch.arange(3.0)},
        model="tiny",
        model_overrides={"swin": False},
        geometry=Geometry(detector_px=(16, 16)),
        grid=CubeGrid(16, 24.0),
        angles_deg=(0.0, 90.0),
        hu_window=(-1024.0, 1500.0),
        trained_in_run="abc",
    )
    return dataclasses.replace(bundle, **changes)


def test_png_and_model_bundle_datasets_round_trip(tmp_path):
    png = PngDataset(str(tmp_path / "a.png"))
    png.save(b"\x89PNG fake")
    assert png.load() == b"\x89PNG fake"
    dataset = ModelBundleDataset(str(tmp_path / "m.pt"))
    dataset.save(_bundle())
    loaded = dataset.load()
    assert dataclasses.replace(loaded, state_dict={}) == _bundle(state_dict={})
    torch.testing.assert_close(loaded.state_dict["w"], torch.arange(3.0))
    # Plain types on disk: a weights-only load reads it.
    assert torch.load(tmp_path / "m.pt", weights_only=True)["volume_size"] == 16


def test_figure_dataset_writes_the_figure_as_a_png(tmp_path):
    figure = preview_strip(np.ones((2, 8, 8)), [0.0, 90.0], title="p")
    dataset = FigureDataset(str(tmp_path / "sub" / "p.png"))
    dataset.save(figure)
    assert dataset.load().startswith(b"\x89PNG\r\n\x1a\n")
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["p.png"]


def test_a_folder_of_figures_draws_one_patient_at_a_time_and_carries_files_over(
    tmp_path,
):
    """As the drr stage's previews: lazy figures, one alive at a time, the
    folder stamped with its data set, an unchanged patient's file linked."""
    drawn: list[weakref.ref] = []

    def strip(patient: str):
        def draw():
            gc.collect()
            assert all(ref() is None for ref in drawn), "an earlier figure lives on"
            figure = preview_strip(np.ones((2, 8, 8)), [0.0, 90.0], title=patient)
            drawn.append(weakref.ref(figure))
            return figure

        return draw

    folder = PatientFolderDataset(
        str(tmp_path / "previews"), "ct_pipeline.datasets.FigureDataset", ".png"
    )
    folder.save(PatientLayer({p: strip(p) for p in "abc"}, dataset_id="set-1"))
    assert len(drawn) == 3
    previous = folder.load()
    assert previous.dataset_id == "set-1"
    kept = previous["a"]()
    assert kept.startswith(b"\x89PNG")
    folder.save(PatientLayer({"a": previous["a"], "d": strip("d")}, dataset_id="set-2"))
    assert len(drawn) == 4  # "a" was not drawn again
    assert (tmp_path / "previews" / "a.png").read_bytes() == kept
    assert folder.load().dataset_id == "set-2"


def test_failed_save_keeps_the_previous_file(tmp_path):
    dataset = ModelBundleDataset(str(tmp_path / "m.pt"))
    dataset.save(_bundle(trained_in_run="first"))
    with pytest.raises(Exception):  # noqa: B017 - any pickling error will do
        dataset.save(_bundle(model_overrides={"bad": lambda: None}))
    assert dataset.load().trained_in_run == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def _write_nhdr(folder, name: str) -> None:
    """A tiny NRRD with a detached gzip data file, ``<name>.raw.gz``."""
    import gzip

    data = np.full((4, 4, 4), -1000, dtype="<i2")
    data[1:3, 1:3, 1:3] = 40
    (folder / f"{name}.raw.gz").write_bytes(gzip.compress(data.tobytes(order="F")))
    (folder / f"{name}.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 4 4 4\nspace directions: (2,0,0) (0,2,0) (0,0,2)\n"
        "endian: little\nencoding: gzip\nspace origin: (0,0,0)\n"
        f"data file: {name}.raw.gz\n"
    )


def test_input_folder_reads_every_format_and_a_detached_header_s_data_file(tmp_path):
    save_ct(_volume(), tmp_path / "alice.nii.gz")
    _write_nhdr(tmp_path, "bob")
    (tmp_path / "carol.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 2 2 2\n"
        "ElementType = MET_SHORT\nElementDataFile = carol.raw\n"
    )
    (tmp_path / "carol.raw").write_bytes(
        np.full((4, 4, 4), -1000, "<i2").tobytes(order="F")
    )
    sources = CTFolderDataset(str(tmp_path), read_only=True).load()
    assert sorted(sources) == ["alice", "bob", "carol"]
    assert sources["bob"]().hu.shape == (4, 4, 4)
    assert sources["carol"]().spacing_mm == (2.0, 2.0, 2.0)


def test_input_folder_with_unusable_entries_names_each_and_why(tmp_path):
    """Issue: a raw folder of files the project cannot read was taken as empty
    (and phantoms made); now every such entry is listed and nothing loads."""
    save_ct(_volume(), tmp_path / "alice.nii.gz")
    (tmp_path / "notes.txt").write_text("not a CT")
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nthis is no header\n")
    (tmp_path / "garbage.nii").write_bytes(b"x" * 400)
    (tmp_path / "empty_series").mkdir()
    with pytest.raises(DatasetError) as caught:
        CTFolderDataset(str(tmp_path), read_only=True).load()
    message = str(caught.value)
    assert "4 entries that cannot be used" in message
    for name, why in [
        ("notes.txt", "not a CT"),
        ("broken.nrrd", "unreadable header"),
        ("garbage.nii", "unreadable or truncated NIfTI"),
        ("empty_series", "not a CT"),
    ]:
        assert f"{tmp_path / name}: {why}" in message
    assert "alice" not in message
