"""Kedro datasets that connect nodes to MLflow without nodes calling MLflow.

The catalogue decides what is tracked (DESIGN.md s.1): the training node asks
for a ``MetricSink`` input and gets one that writes into kedro-mlflow's active
run, or a log-only sink when tracking is off (e.g. in library tests).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.tracking import MetricSink, MlflowSink

logger = logging.getLogger(__name__)


class LoggingSink:
    """Metrics to the Python log only: used when no MLflow run is active."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        text = ", ".join(f"{key}={value:.4g}" for key, value in sorted(metrics.items()))
        logger.info("step %d: %s", step, text)

    def log_params(self, params: Mapping[str, Any]) -> None:
        logger.info("params: %s", dict(params))


class MetricSinkDataset(AbstractDataset[None, MetricSink]):
    """Loads a sink bound to the active MLflow run (tracking URI + run id).

    Spawned DDP workers cannot see the parent's active run, so the sink carries
    both explicitly and is picklable.
    """

    def load(self) -> MetricSink:
        run = mlflow.active_run()
        if run is None:
            logger.info("No active MLflow run: training metrics go to the log only")
            return LoggingSink()
        return MlflowSink(mlflow.get_tracking_uri(), run.info.run_id)

    def save(self, data: None) -> None:
        raise DatasetError("MetricSinkDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {}


class MlflowTagsDataset(AbstractDataset[dict[str, str], None]):
    """Saves a dict as tags of the active MLflow run (config, views, data source)."""

    def load(self) -> None:
        raise DatasetError("MlflowTagsDataset is write-only")

    def save(self, data: dict[str, str]) -> None:
        if mlflow.active_run() is None:
            logger.info("No active MLflow run: tags %s not recorded", data)
            return
        mlflow.set_tags({key: str(value) for key, value in data.items()})

    def _describe(self) -> dict[str, Any]:
        return {}
