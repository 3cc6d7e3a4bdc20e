"""Each pipeline run on an in-memory catalogue, in Kedro's spaceflights manner:
the nodes' wiring and contracts, without files, MLflow or a session."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.datasets.tracking import LoggingSink
from ct_pipeline.drr import DRRSet
from ct_pipeline.inference import ModelBundle, Refinement
from ct_pipeline.pipelines.drr.pipeline import create_pipeline as drr_pipeline
from ct_pipeline.pipelines.evaluate.pipeline import (
    create_pipeline as evaluate_pipeline,
)
from ct_pipeline.pipelines.predict.pipeline import create_pipeline as predict_pipeline
from ct_pipeline.pipelines.train.pipeline import create_pipeline as train_pipeline
from tiny_project import REPO_ROOT, TINY_PARAMS, _deep_update


def _params(tmp_path) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for file in sorted((REPO_ROOT / "conf" / "base").glob("parameters*.yml")):
        base |= yaml.safe_load(file.read_text())
    params = {k: _deep_update(v, TINY_PARAMS.get(k, {})) for k, v in base.items()}
    params["train"] |= {"epochs": 1, "checkpoint_dir": str(tmp_path / "checkpoints")}
    params["refinement"] |= {"steps": 3}
    return params


# The drr stage's previous layers: none in memory, so every patient is made.
PREVIOUS_LAYERS = ("ct_source", "preprocessed_ct", "drr_sets", "drr_previews")


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so intermediates stay readable."""

    def _release(self) -> None:
        pass


def _run(pipeline, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run ``pipeline`` with every input and output in memory; all outputs."""
    catalog = DataCatalog({name: KeptDataset(value) for name, value in inputs.items()})
    for name in pipeline.all_outputs() - set(inputs):
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.all_outputs()}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Any]:
    """drr, then train, then evaluate and predict, each fed the outputs before it."""
    torch.set_num_threads(1)
    params = _params(tmp_path_factory.mktemp("in_memory"))
    drr = _run(
        drr_pipeline(),
        {"raw_ct": {}}
        | {f"previous_{k}": {} for k in PREVIOUS_LAYERS}
        | {f"params:{k}": params[k] for k in ("raw", "phantoms", "preprocess", "drr")}
        | {f"params:drr.{k}": params["drr"][k] for k in ("workers", "shard")},
    )
    train = _run(
        train_pipeline(),
        {
            "preprocessed_ct": drr["preprocessed_ct"],
            "drr_sets": drr["drr_sets"],
            "ct_source": drr["ct_source"],
            "training_metric_sink": LoggingSink(),
        }
        | {f"params:{k}": params[k] for k in ("split", "train", "refinement")},
    )
    evaluate = _run(
        evaluate_pipeline(),
        {
            "preprocessed_ct": drr["preprocessed_ct"],
            "drr_sets": drr["drr_sets"],
            "ct_source": drr["ct_source"],
            "best_model": train["best_model"],
            "training_history": train["training_history"],
            "patient_split": train["patient_split"],
            "unet_baseline_runs": [],
            "params:evaluate": params["evaluate"],
        },
    )
    predict = _run(
        predict_pipeline(),
        {
            "predict_drr_sets": drr["drr_sets"],
            "best_model": train["best_model"],
            "predict_radiographs": {},
            "params:predict.skip_model_patients": True,
            "params:drr.mu_water_per_mm": params["drr"]["mu_water_per_mm"],
            "params:radiographs": params["radiographs"],
        },
    )
    return {
        "params": params,
        "drr": drr,
        "train": train,
        "evaluate": evaluate,
        "predict": predict,
    }


def test_drr_pipeline_hands_on_loaders_of_cubes_and_views(stages):
    params, drr = stages["params"], stages["drr"]
    assert len(drr["preprocessed_ct"]) == params["phantoms"]["count"]
    assert drr["ct_source"]["source"] == "phantom"
    patient = min(drr["drr_sets"])
    cube: CTVolume = drr["preprocessed_ct"][patient]()
    views: DRRSet = drr["drr_sets"][patient]()
    assert CubeGrid.of(cube).size == params["preprocess"]["volume_size"]
    assert views.projections.shape == (
        params["drr"]["num_views"],
        *params["drr"]["geometry"]["detector_px"],
    )
    assert abs(views.isocentre_mm - cube.centre_mm).max() < 1e-6


def test_train_pipeline_returns_a_bundle_labelled_with_what_it_holds(stages):
    params, train = stages["params"], stages["train"]
    bundle: ModelBundle = train["best_model"]
    assert bundle.model == params["train"]["model"]
    assert bundle.grid == CubeGrid(16, 24.0)
    assert bundle.num_views == params["train"]["num_views"]
    assert bundle.refinement == Refinement(**params["refinement"])
    assert bundle.dataset_id == stages["drr"]["ct_source"]["dataset_id"]
    assert len(train["training_history"]) == params["train"]["epochs"]
    split = train["patient_split"]
    assert not set(split["train"]) & set(split["test"])
    assert bundle.split == {part: tuple(ids) for part, ids in split.items()}


def test_evaluate_pipeline_scores_the_model_against_the_mean_volume(stages):
    evaluate = stages["evaluate"]
    metrics = evaluate["test_metrics"]
    assert {"test/psnr_3d", "baseline_mean/psnr_3d"} <= set(metrics)
    assert set(evaluate["method_comparison"]["method"]) == {"tiny", "mean_volume"}
    assert isinstance(evaluate["headline_figure"], Figure)
    tags = evaluate["run_tags"]
    assert tags["mlflow.runName"] == "tiny-2v" and tags["n_parameters"].isdigit()


def test_predict_pipeline_reconstructs_the_test_patients_and_scores_them(stages):
    predict, split = stages["predict"], stages["train"]["patient_split"]
    assert sorted(predict["predictions"]) == sorted(split["test"])
    grid = stages["train"]["best_model"].grid
    for volume in predict["predictions"].values():  # loaders, written one by one
        assert CubeGrid.of(volume()).size == grid.size
    scores = predict["predict_reprojection"]
    assert sorted(scores["patient"]) == sorted(split["test"])
    assert (scores["reprojection/ncc"] > 0).all()
    assert predict["radiograph_predictions"] == {}
