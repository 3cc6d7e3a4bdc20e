"""`make study` on the tiny project: both tables, both figures, one MLflow run per variant."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ct_pipeline.drivers.study import run_study
from ct_pipeline.evaluation.study import COLUMNS, component_variants
from tiny_project import close_stale_runs, inside

pytestmark = pytest.mark.slow

TINY_STUDY = {
    "study": {
        "model": "tiny",
        "baseline": "unet_tiny",
        "views": [2],
        "reference_epochs": 2,
        "component_views": 2,
        "components": ["full", "no_swin"],
        "seeds": [0],
    },
    "train": {"epochs": 1},
}


@pytest.fixture(scope="module")
def study(tiny_project):
    from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook

    mlflow_hook.run_id = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with inside(tiny_project.path):
            tables = run_study(tiny_project.path, "local", TINY_STUDY)
    finally:
        torch.set_num_threads(threads)
        close_stale_runs()
    return tiny_project, tables


def test_both_tables_are_written_with_the_documented_columns(study):
    project, tables = study
    folder = project.data / "08_reporting" / "study"
    views = pd.read_csv(folder / "views.csv")
    components = pd.read_csv(folder / "components.csv")
    assert list(views.columns) == list(COLUMNS) == list(components.columns)
    assert sorted(views["variant"]) == ["bp_unet", "hybrid", "unet"]
    assert list(components["variant"]) == ["hybrid", "no_swin"]
    # The full hybrid is trained once and shared by both tables.
    shared = views.set_index("variant").loc["hybrid", "psnr_3d"]
    assert components.set_index("variant").loc["hybrid", "psnr_3d"] == pytest.approx(
        shared, abs=1e-4
    )
    assert (views["psnr_3d"] > 0).all() and (views["train_s"] > 0).all()
    # Only what names a variant changes: the reference gets its own epochs.
    epochs = views.set_index("variant")["epochs"]
    assert (epochs["hybrid"], epochs["unet"], epochs["bp_unet"]) == (1, 1, 2)
    assert (folder / "psnr_vs_views.png").stat().st_size > 0
    assert (folder / "components.png").stat().st_size > 0


def test_each_variant_is_an_mlflow_run_nested_under_the_study_run(study):
    from mlflow.tracking import MlflowClient

    project, _ = study
    client = MlflowClient(tracking_uri=project.tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`ct_pipeline.study` != ''",
    )
    parents = [r for r in runs if r.data.tags.get("ct_pipeline.study_role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r is not parent]
    assert sorted(r.data.tags["ct_pipeline.study_variant"] for r in children) == [
        "bp_unet",
        "hybrid",
        "no_swin",
        "unet",
    ]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (
            child.data.tags["ct_pipeline.study"]
            == parent.data.tags["ct_pipeline.study"]
        )
        assert child.info.run_name.startswith("study/")
        assert "test/psnr_3d" in child.data.metrics
        assert "val/psnr_3d" in child.data.metrics  # per-epoch curves from training
        assert child.data.params["train.model"] == child.data.tags["ct_pipeline.model"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "views.csv",
        "components.csv",
        "psnr_vs_views.png",
        "components.png",
    } <= artifacts


def test_unknown_components_are_refused_by_name():
    with pytest.raises(ValueError, match="no_magic"):
        component_variants("tiny", 2, ["full", "no_magic"])
