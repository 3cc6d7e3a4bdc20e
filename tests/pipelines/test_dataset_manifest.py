"""The drr stage's data set: one manifest, layers committed together, a lock
per layer, and reruns that render only what changed (tiny kedro runs)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import yaml

import ct_pipeline.commit
import ct_pipeline.pipelines.drr.nodes as drr_nodes
from ct_pipeline.lock import LayerLocked, acquire, lock_path, release

LAYERS = ("03_primary/ct", "04_feature/drr", "08_reporting/drr_previews")
MANIFEST = "03_primary/ct_source.json"


@pytest.fixture
def project(fresh_tiny_project):
    """A tiny project made smaller still: 3 phantoms."""
    path = fresh_tiny_project.path / "conf/local/parameters.yml"
    params = yaml.safe_load(path.read_text())
    params["phantoms"] |= {"count": 3}
    params["drr"]["view_oversample"] = 1
    path.write_text(yaml.safe_dump(params))
    return fresh_tiny_project


def _set(project, group: str, **values) -> None:
    path = project.path / "conf/local/parameters.yml"
    params = yaml.safe_load(path.read_text())
    params[group] |= values
    path.write_text(yaml.safe_dump(params))


def _snapshot(data: Path) -> dict[str, str]:
    """Every file of the data set (hidden ones too), by content."""
    files = {}
    for layer in LAYERS:
        for file in sorted((data / layer).rglob("*")):
            if file.is_file():
                files[str(file.relative_to(data))] = hashlib.sha256(
                    file.read_bytes()
                ).hexdigest()
    files[MANIFEST] = hashlib.sha256((data / MANIFEST).read_bytes()).hexdigest()
    return files


def _inodes(data: Path, layer: str) -> dict[str, int]:
    return {
        f.name: f.stat().st_ino
        for f in (data / layer).iterdir()
        if f.is_file() and not f.name.startswith(".")
    }


def _leftovers(data: Path) -> list[Path]:
    return [
        p for p in data.rglob(".*") if ".partial" in p.name or ".old-" in p.name
    ] + list(data.rglob(".*.lock"))


@pytest.mark.slow
def test_a_failing_run_leaves_the_previous_data_set_whole(project, monkeypatch):
    project.run("drr")
    before = _snapshot(project.data)
    stamps = {
        json.loads((project.data / layer / ".dataset.json").read_text())["dataset_id"]
        for layer in LAYERS
    }
    manifest = json.loads((project.data / MANIFEST).read_text())
    assert stamps == {manifest["dataset_id"]}
    assert sorted(manifest["fingerprints"]) == manifest["patients"]

    # Another size: every layer would change; the render of one patient fails
    # after the cubes of all patients were written.
    _set(project, "preprocess", volume_size=24, target_spacing_mm=16.0)
    rendered = drr_nodes._rendered
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return rendered(*args, **kwargs)

    monkeypatch.setattr(drr_nodes, "_rendered", failing)
    with pytest.raises(Exception, match="injected failure"):
        project.run("drr")
    assert _snapshot(project.data) == before
    assert _leftovers(project.data) == []


@pytest.mark.slow
def test_a_run_killed_mid_commit_is_finished_and_leftovers_removed(
    project, monkeypatch
):
    project.run("drr")
    old_id = json.loads((project.data / MANIFEST).read_text())["dataset_id"]
    _set(project, "preprocess", volume_size=24, target_spacing_mm=16.0)

    # Killed right after the commit point: the new manifest is in place, no
    # folder swapped yet (the staged folders stay, as after kill -9).
    def killed(staged, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(ct_pipeline.commit, "swap_in", killed)
    with pytest.raises(KeyboardInterrupt):
        project.run("drr")
    monkeypatch.undo()
    new_id = json.loads((project.data / MANIFEST).read_text())["dataset_id"]
    assert new_id != old_id
    assert any(".partial-" in p.name for p in _leftovers(project.data))
    # A leftover of a run killed before its commit point.
    junk = project.data / "04_feature/.drr.partial-deadbeef"
    junk.mkdir()

    project.run("drr")
    for layer in LAYERS:
        stamp = json.loads((project.data / layer / ".dataset.json").read_text())
        assert stamp["dataset_id"] == new_id
    assert _leftovers(project.data) == []


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    layer = tmp_path / "data/04_feature/drr"
    held = acquire([layer])
    # Another live process of this host holds it (our parent stands in for it).
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "since": 0.0}
    lock_path(layer).write_text(json.dumps(holder))
    with pytest.raises(LayerLocked, match=rf"process {os.getppid()} on host"):
        acquire([layer])
    # Gone: a pid that no process has.
    lock_path(layer).write_text(json.dumps(holder | {"pid": 2**22 + 12345}))
    taken = acquire([layer])
    assert json.loads(lock_path(layer).read_text())["pid"] == os.getpid()
    release(taken + held)
    assert not lock_path(layer).exists()


@pytest.mark.slow
def test_a_concurrent_drr_run_is_refused_naming_the_holder(project):
    layer = (project.data / "04_feature/drr").resolve()
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "since": 0.0}
    lock_path(layer).parent.mkdir(parents=True, exist_ok=True)
    lock_path(layer).write_text(json.dumps(holder))
    with pytest.raises(LayerLocked, match="is being written by another run"):
        project.run("drr")
    assert not (project.data / MANIFEST).exists()


@pytest.mark.slow
def test_reruns_render_only_what_changed(fresh_tiny_project, monkeypatch):
    import nibabel as nib

    from ct_pipeline.phantoms import chest_phantom

    project = fresh_tiny_project
    _set(project, "drr", view_oversample=1)
    raw = project.data / "01_raw"
    for seed in range(3):
        ct = chest_phantom(seed, size_vox=32, spacing_mm=12.0)
        nib.save(nib.Nifti1Image(ct.hu, ct.affine), raw / f"p{seed}.nii.gz")
    project.run("drr")
    rendered = drr_nodes._rendered
    calls: list[float] = []

    def counting(cube, *args, **kwargs):
        calls.append(1)
        return rendered(cube, *args, **kwargs)

    monkeypatch.setattr(drr_nodes, "_rendered", counting)

    # Nothing changed: nothing rendered, the files are the same files.
    inodes = _inodes(project.data, "04_feature/drr")
    project.run("drr")
    assert calls == []
    assert _inodes(project.data, "04_feature/drr") == inodes

    # One raw file's content changes: that patient alone.
    ct = chest_phantom(7, size_vox=32, spacing_mm=12.0)
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), raw / "p1.nii.gz")
    project.run("drr")
    assert len(calls) == 1
    assert _inodes(project.data, "04_feature/drr")["p0.npz"] == inodes["p0.npz"]
    assert _inodes(project.data, "04_feature/drr")["p1.npz"] != inodes["p1.npz"]

    # A raw file removed: its files go, in every layer.
    (raw / "p2.nii.gz").unlink()
    calls.clear()
    project.run("drr")
    assert calls == []
    for layer in LAYERS:
        assert not any(
            p.name.startswith("p2") for p in (project.data / layer).iterdir()
        )
    assert json.loads((project.data / MANIFEST).read_text())["patients"] == ["p0", "p1"]

    # A parameter change: every patient again.
    _set(project, "drr", mu_water_per_mm=0.021)
    project.run("drr")
    assert len(calls) == 2


def test_train_refuses_cubes_and_views_of_two_data_sets():
    from ct_pipeline.datasets.layers import PatientLayer
    from ct_pipeline.pipelines.train.nodes import check_one_dataset

    manifest = {"dataset_id": "a1"}
    cubes = PatientLayer({"p": None}, dataset_id="a1")
    assert check_one_dataset(cubes, PatientLayer(dataset_id="a1"), manifest) == "a1"
    with pytest.raises(
        ValueError,
        match=r"DRR sets \(data/04_feature/drr\): b2.*"
        r"rerun `kedro run --pipelines drr`",
    ):
        check_one_dataset(cubes, PatientLayer(dataset_id="b2"), manifest)
    with pytest.raises(ValueError, match="the cubes .* name no data set"):
        check_one_dataset(PatientLayer(), PatientLayer(dataset_id="a1"), manifest)
