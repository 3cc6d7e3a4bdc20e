"""Every stage's parameters are checked when a run starts, before anything is written."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ct_pipeline.drr.geometry import resolve_angles
from ct_pipeline.hooks.checks import ParameterError, check_parameters
from ct_pipeline.hooks.parameter_keys import TYPED_GROUPS
from ct_pipeline.pipelines.drr.nodes import drr_geometry
from ct_pipeline.training import TrainConfig
from tiny_project import REPO_ROOT, make_tiny_project, run_kedro


def base_params() -> dict:
    params: dict = {}
    for file in sorted((REPO_ROOT / "conf" / "base").glob("parameters*.yml")):
        params |= yaml.safe_load(file.read_text())
    return params


def with_change(key: str, value: object) -> dict:
    params = copy.deepcopy(base_params())
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value
    return params


def test_the_project_defaults_pass():
    check_parameters(base_params(), base_params())


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("drr.geometry.pixel_mm", -9.0, "pixel_mm must be > 0"),
        ("drr.geometry.sdd_mm", 900.0, "sad_mm < sdd_mm"),
        ("drr.geometry.sad_mm", float("nan"), "sad_mm must be finite"),
        ("drr.geometry.pixel_mm", float("inf"), "pixel_mm must be finite"),
        ("preprocess.volume_size", 30, "preprocess.volume_size"),
        ("preprocess.target_spacing_mm", 0.0, "preprocess.target_spacing_mm"),
        ("drr.angles_deg", [], "at least one angle"),
        ("drr.angles_deg", [0.0, float("nan")], "finite"),
        ("drr.mu_water_per_mm", -0.02, "drr.mu_water_per_mm"),
        ("drr.workers", 0, "drr.workers: expected a whole number >= 1"),
        ("drr.workers", "2", "drr.workers: expected a whole number >= 1"),
        ("drr.shard", "3/2", "drr.shard: expected 'i/n'"),
        ("drr.shard", "0/4", "drr.shard: expected 'i/n'"),
        ("drr.shard", "a/b", "drr.shard: expected 'i/n'"),
        ("train.lr", -1.0, "train.lr"),
        ("train.num_views", 3, "among the rendered drr angles"),
        ("split.fractions", {"train": 0.9, "val": 0.2, "test": 0.1}, "split.fractions"),
        ("phantoms.count", 0, "phantoms.count"),
        ("phantoms.replace_real_ct", "yes", "phantoms.replace_real_ct"),
        ("raw.assume_orientation", "LPA", "raw.assume_orientation: expected three"),
        ("evaluate.figures_patients", 0, "evaluate.figures_patients"),
        ("refinement.steps", -5, "refinement: refinement steps"),
        ("refinement.lr", 0.0, "refinement: refinement lr"),
    ],
)
def test_each_bad_parameter_is_named(key, value, named):
    with pytest.raises(ParameterError, match=named.replace(".", r"\.")) as error:
        check_parameters(with_change(key, value), base_params())
    assert "nothing was run or written" in str(error.value)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("trian", "train"),
        ("drr.num_view", "drr.num_views"),
        ("drr.worker", "drr.workers"),
        ("drr.shards", "drr.shard"),
        ("drr.geometry.sad", "drr.geometry.sad_mm"),
        ("preprocess.volume_sizes", "preprocess.volume_size"),
        ("phantoms.counts", "phantoms.count"),
        ("split.seeds", "split.seed"),
        ("split.fractions.tests", "split.fractions.test"),
        ("train.epoch", "train.epochs"),
        ("train.model_overrides.swim", "train.model_overrides.swin"),
        ("train.augment.mirorr", "train.augment.mirror"),
        ("train.loss_weights.ssmi", "train.loss_weights.ssim"),
        ("refinement.step", "refinement.steps"),
        ("evaluate.figure_patients", "evaluate.figures_patients"),
        ("study.seed", "study.seeds"),
    ],
)
def test_an_unknown_key_of_any_group_is_named_with_the_closest_known_one(
    key, suggestion
):
    *parents, leaf = key.split(".")
    params = base_params()
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = 1
    with pytest.raises(ParameterError) as error:
        check_parameters(params, base_params())
    message = str(error.value)
    assert f"unknown parameter '{key}' (did you mean '{suggestion}'?)" in message
    # Reported once: the typed objects do not report the key a second time.
    assert message.count("\n  - ") == 1, message


def test_every_unknown_key_is_reported_at_once_with_bad_values():
    params = with_change("train.lr", -1.0)
    params["trian"] = {"epochs": 5}
    params["drr"]["num_view"] = 4
    with pytest.raises(ParameterError) as error:
        check_parameters(params, base_params())
    message = str(error.value)
    for named in ("'trian'", "'drr.num_view'", "train.lr"):
        assert named in message


def test_a_key_nothing_resembles_is_listed_with_the_known_keys():
    with pytest.raises(
        ParameterError, match=r"known here: count, replace_real_ct, seed, size_vox"
    ):
        check_parameters(with_change("phantoms.zzz", 1), base_params())


def test_typed_groups_take_every_field_of_their_object():
    """``train.compile`` has no line in conf/base, yet TrainConfig reads it."""
    params = with_change("train.compile", True)
    params["train"]["model_overrides"] = {"swin": False}
    params["refinement"]["steps"] = 0
    check_parameters(params, base_params())


def test_every_key_of_conf_base_is_one_its_typed_object_reads():
    """A conf/base key the object does not read would be refused as unknown."""
    for path, names in TYPED_GROUPS.items():
        node = base_params()
        for part in path:
            node = node[part]
        assert set(node) <= set(names), (path, sorted(set(node) - set(names)))


@pytest.mark.slow
def test_kedro_run_refuses_a_misspelt_group_before_anything_runs(tmp_path: Path):
    project = make_tiny_project(tmp_path / "project")
    # This checkout's code, whatever the editable install points at.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kedro")), "run", "--pipelines", "drr"]
        + ["--params", "trian.epochs=5"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "unknown parameter 'trian' (did you mean 'train'?)" in output, output[-3000:]
    assert [p for p in (project / "data").rglob("*") if p.is_file()] == []


def test_drr_and_train_refuse_contradictory_angles_with_the_same_error():
    """One resolver: the DRR stage no longer ignores a num_views that contradicts
    angles_deg, nor reads [] as unset."""
    with pytest.raises(ValueError) as from_train:
        TrainConfig(num_views=3, angles_deg=[0.0, 90.0])
    with pytest.raises(ValueError) as from_drr:
        drr_geometry({**base_params()["drr"], "num_views": 3, "angles_deg": [0, 90]})
    assert str(from_drr.value) == str(from_train.value)
    with pytest.raises(ValueError, match="at least one angle"):
        resolve_angles(None, [])


@pytest.mark.slow
def test_a_bad_volume_size_fails_before_any_file_is_written(fresh_tiny_project):
    project = fresh_tiny_project
    local = project.path / "conf" / "local" / "parameters.yml"
    params = yaml.safe_load(local.read_text())
    params["preprocess"]["volume_size"] = 30
    local.write_text(yaml.safe_dump(params))
    with pytest.raises(ParameterError, match="preprocess.volume_size"):
        run_kedro(project.path, "drr")
    written = [p for p in project.data.rglob("*") if p.is_file()]
    assert written == []
