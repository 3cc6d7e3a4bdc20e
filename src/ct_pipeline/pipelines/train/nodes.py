"""Nodes of the ``train`` pipeline: thin glue over ct_pipeline.training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.datasets.layers import layer_id
from ct_pipeline.datasets.partitions import load_one, training_partitions
from ct_pipeline.drr import DRRSet
from ct_pipeline.inference import ModelBundle, Refinement
from ct_pipeline.training import TrainConfig, split_patients, train_model
from ct_pipeline.training.bundle import trained_bundle
from ct_pipeline.training.config import run_name
from ct_pipeline.training.sink import MetricSink


def split_dataset(
    preprocessed_ct: Mapping[str, Any], params: dict[str, Any]
) -> dict[str, list[str]]:
    """Seeded split by patient id (the partition keys; no volume is read)."""
    return split_patients(preprocessed_ct.keys(), params["fractions"], params["seed"])


def train_reconstructor(
    preprocessed_ct: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    patient_split: dict[str, list[str]],
    params: dict[str, Any],
    metric_sink: MetricSink,
    ct_source: dict[str, Any],
    refinement: dict[str, Any],
) -> tuple[ModelBundle, list[dict[str, float]]]:
    """Train on the train split (``world_size`` DDP workers), keep the best on val.

    Returns the best model as a self-describing ``ModelBundle``
    and the per-epoch history. The tracking run is named after the model and
    its views and records the data it trains on, read from the data (not
    from today's configuration).
    """
    dataset_id = check_one_dataset(preprocessed_ct, drr_sets, ct_source)
    config = TrainConfig.from_params(params)
    volumes, drrs = training_partitions(preprocessed_ct, drr_sets, patient_split)
    first = min(patient_split["train"])
    volume: CTVolume = load_one(volumes[first])
    drr: DRRSet = load_one(drrs[first])
    metric_sink.set_tags({"mlflow.runName": run_name(config.model, len(config.angles))})
    metric_sink.log_params(data_params(volume, drr, patient_split, ct_source))
    result = train_model(
        volumes, drrs, patient_split, config, sink=metric_sink, dataset_id=dataset_id
    )
    run_id = metric_sink.run_id
    bundle = trained_bundle(
        result, config, Refinement(**refinement), patient_split, run_id, dataset_id
    )
    return bundle, result.history


RERUN_DRR = "rerun `kedro run --pipelines drr` to make them one data set again"


def check_one_dataset(
    cubes: Mapping[str, Any], views: Mapping[str, Any], manifest: Mapping[str, Any]
) -> str:
    """The data-set id the cubes, the views and the manifest all carry; an
    error naming the layers when they disagree (pairs from two setups would
    train without a word)."""
    ids = {
        "the manifest (data/03_primary/ct_source.json)": manifest.get("dataset_id"),
        "the cubes (data/03_primary/ct)": layer_id(cubes),
        "the DRR sets (data/04_feature/drr)": layer_id(views),
    }
    missing = [layer for layer, value in ids.items() if value is None]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} name no data set (written by an older "
            f"version, or by hand): {RERUN_DRR}"
        )
    if len(set(ids.values())) > 1:
        raise ValueError(
            "the layers belong to different data sets ("
            + ", ".join(f"{layer}: {value}" for layer, value in ids.items())
            + f"), e.g. from a `drr` run cut short by `--to-nodes`: {RERUN_DRR}"
        )
    return str(ids["the cubes (data/03_primary/ct)"])


def data_params(
    volume: CTVolume,
    drr: DRRSet,
    split: Mapping[str, list[str]],
    ct_source: Mapping[str, Any],
) -> dict[str, Any]:
    """``data.*`` run parameters: the grid, the rendered views and the split of the data."""
    grid = CubeGrid.of(volume)
    params: dict[str, Any] = {
        "data.source": ct_source["source"],
        "data.volume_size": grid.size,
        "data.spacing_mm": round(grid.spacing_mm, 6),
        "data.rendered_angles_deg": ",".join(f"{a:g}" for a in drr.angles_deg),
        "data.mu_water_per_mm": drr.mu_water_per_mm,
    }
    params |= {f"data.geometry.{k}": v for k, v in drr.geometry.to_dict().items()}
    params |= {f"data.patients.{k}": len(v) for k, v in split.items()}
    return params
