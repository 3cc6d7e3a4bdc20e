"""The drr stage's worker pool: the same files as one process, failures that
name the patient and leave the previous data set whole; shards, and their
merge into the data set one run makes."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import nibabel as nib
import pytest
import yaml
from kedro.io import DatasetError

from ct_pipeline.datasets import PngDataset
from ct_pipeline.datasets.folder import _save
from ct_pipeline.datasets.layers import PatientLayer
from ct_pipeline.phantoms import chest_phantom
from ct_pipeline.pipelines.drr.manifest import assemble_manifest
from ct_pipeline.pipelines.drr.merge import ShardsRefused, merge_shards
from ct_pipeline.pipelines.drr.workload import (
    Shard,
    parse_shard,
    shard_of_part,
    shard_patients,
    worker_count,
)
from ct_pipeline.pool import PatientFailed, written_by_pool
from tiny_project import TinyProject, make_tiny_project


def test_the_pool_writes_every_file_and_names_a_failing_patient(tmp_path):
    write = partial(_save, PngDataset)  # the folder dataset's own writer
    jobs = {
        f"p{k}": (partial(bytes, [k]), write, tmp_path / f"p{k}.png") for k in range(5)
    }
    assert sorted(written_by_pool(jobs, workers=2)) == sorted(jobs)
    assert [(tmp_path / f"p{k}.png").read_bytes() for k in range(5)] == [
        bytes([k]) for k in range(5)
    ]
    jobs["p3"] = (partial(int, "x"), write, tmp_path / "p3.png")
    with pytest.raises(PatientFailed, match="patient p3: ValueError: invalid literal"):
        list(written_by_pool(jobs, workers=2))


def test_every_patient_is_in_exactly_one_shard():
    patients = [f"p{k:02d}" for k in range(23)]
    for count in (1, 2, 3, 7, 23, 30):
        shards = [
            shard_patients(reversed(patients), parse_shard(f"{i}/{count}"))
            for i in range(1, count + 1)
        ]
        assert sorted(p for shard in shards for p in shard) == patients
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard_patients(patients, parse_shard("2/3")) == patients[1::3]
    assert shard_patients(patients, None) == patients
    assert parse_shard(" 3 / 16 ") == Shard(3, 16)
    assert shard_of_part(Shard(3, 16).name) == Shard(3, 16)
    assert shard_of_part("3-of-2") is None


@pytest.mark.parametrize("shard", ["3/2", "0/4", "a/b", "1", 1, "1/0", "-1/2", ""])
def test_a_bad_shard_is_refused_naming_the_parameter(shard):
    with pytest.raises(ValueError, match="drr.shard: expected 'i/n'"):
        parse_shard(shard)


def test_the_number_of_workers_defaults_to_the_cores():
    assert worker_count(None) == (os.cpu_count() or 1)
    assert worker_count(3) == 3
    for bad in (0, -1, "2", 1.5, True):
        with pytest.raises(ValueError, match="drr.workers: expected"):
            worker_count(bad)


# --- the merge, on parts in memory ------------------------------------------

EVERYONE = [f"p{k}" for k in range(5)]
PARAMETERS = {"preprocess": {"volume_size": 16}, "drr": {"num_views": 4}}


def _part(shard: Shard) -> tuple[dict, PatientLayer]:
    patients = shard_patients(EVERYONE, shard)
    manifest = assemble_manifest(
        "raw",
        PARAMETERS,
        {p: f"fingerprint-{p}" for p in patients},
        {p: {"file": p} for p in patients},
    ) | {"shard": {"part": str(shard), "patients_of_all": EVERYONE}}
    layer = PatientLayer(
        {p: f"file-{p}" for p in patients}, dataset_id=manifest["dataset_id"]
    )
    return manifest, layer


def _parts(count: int = 2) -> dict[str, dict]:
    parts: dict[str, dict] = {"manifests": {}, "layers": {}}
    for i in range(1, count + 1):
        shard = Shard(i, count)
        parts["manifests"][shard.name], parts["layers"][shard.name] = _part(shard)
    return parts


def _merge(parts: dict[str, dict]):
    layers = parts["layers"]
    return merge_shards(parts["manifests"], {}, layers, layers, layers, {})


def test_the_merge_makes_the_manifest_one_run_makes():
    manifest, phantoms, cubes, views, previews = _merge(_parts())
    assert manifest == assemble_manifest(
        "raw",
        PARAMETERS,
        {p: f"fingerprint-{p}" for p in EVERYONE},
        {p: {"file": p} for p in EVERYONE},
    )
    assert phantoms == {}
    assert cubes == {p: f"file-{p}" for p in EVERYONE}
    assert cubes.dataset_id == manifest["dataset_id"]


def test_the_merge_refuses_a_missing_or_disagreeing_part():
    parts = _parts(3)
    del parts["manifests"]["2-of-3"]
    with pytest.raises(ShardsRefused, match="shard.s. 2/3 missing"):
        _merge(parts)

    parts = _parts(2)
    parts["manifests"] |= _parts(3)["manifests"]
    with pytest.raises(ShardsRefused, match="parts of 2 shardings"):
        _merge(parts)

    parts = _parts(2)
    parts["manifests"]["2-of-2"]["parameters"] = {"drr": {"num_views": 8}}
    with pytest.raises(ShardsRefused, match="disagree on their parameters"):
        _merge(parts)

    parts = _parts(2)
    parts["manifests"]["2-of-2"]["shard"]["patients_of_all"] = EVERYONE + ["p9"]
    with pytest.raises(ShardsRefused, match="different lists of patients"):
        _merge(parts)

    parts = _parts(2)
    parts["layers"]["2-of-2"].dataset_id = "another run"
    with pytest.raises(ShardsRefused, match="cubes are not those of its manifest"):
        _merge(parts)

    with pytest.raises(ShardsRefused, match="no parts found"):
        _merge({"manifests": {}, "layers": {}})


# --- end to end, on the tiny project ----------------------------------------


def _project(path: Path, workers: int, raw: bool = True) -> TinyProject:
    project = TinyProject(make_tiny_project(path))
    params_file = project.path / "conf/local/parameters.yml"
    params = yaml.safe_load(params_file.read_text())
    params["drr"] |= {"workers": workers, "view_oversample": 2}
    params["phantoms"] |= {"count": 5}
    params_file.write_text(yaml.safe_dump(params))
    for seed in range(3 if raw else 0):
        _save_ct(project, f"p{seed}", chest_phantom(seed, size_vox=32, spacing_mm=12.0))
    return project


def _save_ct(project: TinyProject, patient: str, ct) -> None:
    nib.save(
        nib.Nifti1Image(ct.hu, ct.affine), project.data / f"01_raw/{patient}.nii.gz"
    )


def _files(data: Path) -> dict[str, bytes]:
    """Every file the drr stage wrote (parts aside), by its path in ``data``."""
    return {
        str(f.relative_to(data)): f.read_bytes()
        for f in sorted(data.glob("0[2348]_*/**/*"))
        if f.is_file() and ".parts" not in str(f)
    }


@pytest.mark.slow
def test_two_workers_write_the_same_data_set_as_one_process(tmp_path):
    serial, pooled = _project(tmp_path / "serial", 1), _project(tmp_path / "pooled", 2)
    serial.run("drr")
    pooled.run("drr")
    one, two = _files(serial.data), _files(pooled.data)
    assert len([name for name in one if name.endswith(".npz")]) == 3
    assert one == two  # every file, the manifest and stamps, byte for byte


@pytest.mark.slow
def test_a_worker_failure_names_the_patient_and_keeps_the_previous_data_set(
    tmp_path,
):
    project = _project(tmp_path / "project", 2)
    project.run("drr")
    before = _files(project.data)
    # Two patients to make again, so the pool runs; one holds no body.
    air = chest_phantom(0, size_vox=32, spacing_mm=12.0)
    air.hu[...] = -1000.0
    _save_ct(project, "p1", air)
    _save_ct(project, "p2", chest_phantom(9, size_vox=32, spacing_mm=12.0))
    # Kedro wraps the error of a dataset's save, keeping its message.
    with pytest.raises(DatasetError, match="patient p1: ValueError: no body"):
        project.run("drr")
    assert _files(project.data) == before


@pytest.mark.slow
def test_shards_merged_make_the_data_set_one_run_makes(tmp_path):
    whole = _project(tmp_path / "whole", 1, raw=False)
    whole.run("drr")
    sharded = _project(tmp_path / "sharded", 1, raw=False)
    sharded.run("drr", {"drr": {"shard": "1/2"}})
    assert _files(sharded.data) == {}  # a shard writes its parts alone
    with pytest.raises(ShardsRefused, match="shard.s. 2/2 missing"):
        sharded.run("drr_merge")
    assert _files(sharded.data) == {}
    sharded.run("drr", {"drr": {"shard": "2/2"}})
    sharded.run("drr_merge")
    merged = _files(sharded.data)
    assert len([name for name in merged if name.endswith(".npz")]) == 5
    assert merged == _files(whole.data)
