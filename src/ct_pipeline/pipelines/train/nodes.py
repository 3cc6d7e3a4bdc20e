"""Nodes of the ``train`` pipeline: thin glue over ct_pipeline.training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ct_pipeline.ct import CTVolume
from ct_pipeline.drr import DRRSet
from ct_pipeline.pipelines.partitions import load_one
from ct_pipeline.training import TrainConfig, split_patients, train_model
from ct_pipeline.training.bundle import trained_bundle
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
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train on the train split (``world_size`` DDP workers), keep the best on val.

    Returns the best model as a self-describing bundle (see ct_pipeline.inference)
    and the per-epoch history.
    """
    config = TrainConfig.from_params(params)
    wanted = set(patient_split["train"]) | set(patient_split["val"])
    # The partitions' loaders (a path each), never the arrays: every rank
    # reads its patients from disk as it needs them.
    volumes = {k: v for k, v in preprocessed_ct.items() if k in wanted}
    drrs = {k: v for k, v in drr_sets.items() if k in wanted}
    result = train_model(volumes, drrs, patient_split, config, sink=metric_sink)
    first = min(patient_split["train"])
    volume: CTVolume = load_one(volumes[first])
    drr: DRRSet = load_one(drrs[first])
    bundle = trained_bundle(result, config, volume, drr.geometry)
    return bundle, result.history
