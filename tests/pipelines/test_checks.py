"""Every stage's parameters are checked when a run starts, before anything is written."""

from __future__ import annotations

import copy

import pytest
import yaml

from ct_pipeline.drr.geometry import resolve_angles
from ct_pipeline.pipelines.checks import ParameterError, check_parameters
from ct_pipeline.pipelines.drr.nodes import drr_geometry
from ct_pipeline.training import TrainConfig
from tiny_project import REPO_ROOT, run_kedro


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
    check_parameters(base_params())


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
        check_parameters(with_change(key, value))
    assert "nothing was run or written" in str(error.value)


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
