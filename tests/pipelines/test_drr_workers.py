"""The drr stage's worker pool: the same files as one process, failures that
name the patient and leave the previous data set whole; and shards."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from ct_pipeline.phantoms import chest_phantom
from ct_pipeline.pipelines.drr.workload import parse_shard, shard_patients, worker_count
from ct_pipeline.pool import PatientFailed, computed_as_done
from tiny_project import TinyProject, make_tiny_project


def test_the_pool_hands_back_every_value_and_names_a_failing_patient():
    makers = {f"p{k}": partial(int, str(k)) for k in range(5)}
    assert dict(computed_as_done(makers, workers=2)) == {f"p{k}": k for k in range(5)}
    with pytest.raises(PatientFailed, match="patient p3: ValueError: invalid literal"):
        dict(computed_as_done(makers | {"p3": partial(int, "x")}, workers=2))


def _project(path: Path, workers: int) -> TinyProject:
    project = TinyProject(make_tiny_project(path))
    params_file = project.path / "conf/local/parameters.yml"
    params = yaml.safe_load(params_file.read_text())
    params["drr"] |= {"workers": workers, "view_oversample": 2}
    params_file.write_text(yaml.safe_dump(params))
    for seed in range(3):
        _save_ct(project, f"p{seed}", chest_phantom(seed, size_vox=32, spacing_mm=12.0))
    return project


def _save_ct(project: TinyProject, patient: str, ct) -> None:
    nib.save(
        nib.Nifti1Image(ct.hu, ct.affine), project.data / f"01_raw/{patient}.nii.gz"
    )


def _arrays(data: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for cube in sorted((data / "03_primary/ct").glob("*.nii.gz")):
        arrays[cube.name] = np.asarray(nib.load(cube).dataobj)
    for views in sorted((data / "04_feature/drr").glob("*.npz")):
        with np.load(views) as npz:
            arrays |= {f"{views.name}:{k}": npz[k] for k in npz.files}
    for png in sorted((data / "08_reporting/drr_previews").glob("*.png")):
        arrays[png.name] = np.frombuffer(png.read_bytes(), dtype=np.uint8)
    return arrays


@pytest.mark.slow
def test_two_workers_write_the_same_data_set_as_one_process(tmp_path):
    serial, pooled = _project(tmp_path / "serial", 1), _project(tmp_path / "pooled", 2)
    serial.run("drr")
    pooled.run("drr")
    one, two = _arrays(serial.data), _arrays(pooled.data)
    assert sorted(one) == sorted(two)
    assert len([k for k in one if k.endswith(":projections")]) == 3
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    manifests = [
        json.loads((p.data / "03_primary/ct_source.json").read_text())
        for p in (serial, pooled)
    ]
    assert manifests[0]["dataset_id"] == manifests[1]["dataset_id"]


@pytest.mark.slow
def test_a_worker_failure_names_the_patient_and_keeps_the_previous_data_set(
    tmp_path,
):
    project = _project(tmp_path / "project", 2)
    project.run("drr")
    before = {
        str(f.relative_to(project.data)): f.read_bytes()
        for f in sorted(project.data.glob("0[348]_*/**/*"))
        if f.is_file()
    }
    # Two patients to make again, so the pool runs; one holds no body.
    air = chest_phantom(0, size_vox=32, spacing_mm=12.0)
    air.hu[...] = -1000.0
    _save_ct(project, "p1", air)
    _save_ct(project, "p2", chest_phantom(9, size_vox=32, spacing_mm=12.0))
    with pytest.raises(Exception, match="patient p1: ValueError: no body"):
        project.run("drr")
    after = {
        str(f.relative_to(project.data)): f.read_bytes()
        for f in sorted(project.data.glob("0[348]_*/**/*"))
        if f.is_file()
    }
    assert after == before


def test_shards_split_the_sorted_patients_round_robin():
    patients = [f"p{k:02d}" for k in range(7)]
    shards = [shard_patients(reversed(patients), f"{i}/3") for i in (1, 2, 3)]
    assert shards == [
        ["p00", "p03", "p06"],
        ["p01", "p04"],
        ["p02", "p05"],
    ]
    assert shard_patients(patients, None) == patients
    assert shard_patients(patients, "1/1") == patients
    assert parse_shard(" 3 / 16 ") == (3, 16)


@pytest.mark.parametrize("shard", ["3/2", "0/4", "a/b", "1", "1/0", "-1/2"])
def test_a_bad_shard_is_refused_naming_the_parameter(shard):
    with pytest.raises(ValueError, match="drr.shard: expected 'i/n'"):
        parse_shard(shard)


def test_the_number_of_workers_defaults_to_the_cores():
    assert worker_count(None) == (os.cpu_count() or 1)
    assert worker_count(3) == 3
    with pytest.raises(ValueError, match="drr.workers"):
        worker_count(0)
