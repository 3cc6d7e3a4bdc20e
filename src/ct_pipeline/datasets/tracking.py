"""Kedro datasets that connect nodes to MLflow without nodes calling MLflow.

The catalogue decides what is tracked: the training node asks
for a ``MetricSink`` input and gets one that writes into kedro-mlflow's active
run, or a log-only sink when tracking is off (e.g. in library tests).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.atomic import replaced_folder
from ct_pipeline.datasets.mlflow_sink import MlflowSink
from ct_pipeline.training.sink import MetricSink

logger = logging.getLogger(__name__)


class LoggingSink:
    """Metrics to the Python log only: used when no MLflow run is active."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        text = ", ".join(f"{key}={value:.4g}" for key, value in sorted(metrics.items()))
        logger.info("step %d: %s", step, text)

    def log_params(self, params: Mapping[str, Any]) -> None:
        logger.info("params: %s", dict(params))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        logger.info("tags: %s", dict(tags))


class MetricSinkDataset(AbstractDataset[None, MetricSink]):
    """Loads a sink bound to the active MLflow run (tracking URI + run id).

    Spawned DDP workers cannot see the parent's active run, so the sink carries
    both explicitly and is picklable.
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata  # the kedro-viz layer

    def load(self) -> MetricSink:
        run = mlflow.active_run()
        if run is None:
            logger.info("No active MLflow run: training metrics go to the log only")
            return LoggingSink()
        return MlflowSink(mlflow.get_tracking_uri(), run.info.run_id)

    def save(self, data: None) -> None:
        raise DatasetError("MetricSinkDataset is read-only")

    def _exists(self) -> bool:
        # Nothing to find on disk: it talks to the tracking server. (Without
        # this, Kedro warns that exists() is not implemented.)
        return False

    def _describe(self) -> dict[str, Any]:
        return {}


class MlflowTagsDataset(AbstractDataset[dict[str, str], None]):
    """Saves a dict as tags of the active MLflow run (config, views, data source)."""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata  # the kedro-viz layer

    def load(self) -> None:
        raise DatasetError("MlflowTagsDataset is write-only")

    def save(self, data: dict[str, str]) -> None:
        if mlflow.active_run() is None:
            logger.info("No active MLflow run: tags %s not recorded", data)
            return
        mlflow.set_tags({key: str(value) for key, value in data.items()})

    def _exists(self) -> bool:
        # Nothing to find on disk: it talks to the tracking server. (Without
        # this, Kedro warns that exists() is not implemented.)
        return False

    def _describe(self) -> dict[str, Any]:
        return {}


class MlflowFiguresDataset(AbstractDataset[dict[str, Any], None]):
    """A dict of matplotlib figures: PNGs in a local folder, logged as MLflow artifacts.

    kedro-mlflow's artifact wrapper logs single files; a figure per test patient
    needs a folder, logged with ``mlflow.log_artifacts`` under ``artifact_path``.
    """

    def __init__(
        self,
        path: str,
        artifact_path: str,
        dpi: int = 110,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        self._path = Path(path)
        self._artifact_path = artifact_path
        self._dpi = dpi

    def load(self) -> None:
        raise DatasetError(
            "MlflowFiguresDataset is write-only; open the PNGs or the MLflow UI"
        )

    def save(self, data: dict[str, Any]) -> None:
        # The folder is replaced whole: a figure of an earlier run (another
        # patient) never survives to be logged with this one.
        with replaced_folder(self._path) as staging:
            for name, figure in data.items():
                figure.savefig(
                    staging / f"{name}.png", dpi=self._dpi, bbox_inches="tight"
                )
        if mlflow.active_run() is not None:
            mlflow.log_artifacts(str(self._path), self._artifact_path)

    def _exists(self) -> bool:
        # Nothing to find on disk: it talks to the tracking server. (Without
        # this, Kedro warns that exists() is not implemented.)
        return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact_path": self._artifact_path}


class MlflowRunsDataset(AbstractDataset[None, list[dict[str, Any]]]):
    """Finished runs of the active experiment whose tag ``tag`` starts with ``prefix``.

    Newest first, each as {"run_id", "tags", "metrics"}; how evaluation finds the
    CNN-only baseline's numbers without a node querying MLflow.
    """

    def __init__(
        self, tag: str, prefix: str, metadata: dict[str, Any] | None = None
    ) -> None:
        self.metadata = metadata
        self._tag, self._prefix = tag, prefix

    def load(self) -> list[dict[str, Any]]:
        run = mlflow.active_run()
        if run is None:
            return []
        found = mlflow.search_runs(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"tags.`{self._tag}` LIKE '{self._prefix}%' and status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        return [
            {
                "run_id": r.info.run_id,
                "tags": dict(r.data.tags),
                "metrics": dict(r.data.metrics),
            }
            for r in found
        ]

    def save(self, data: None) -> None:
        raise DatasetError("MlflowRunsDataset is read-only")

    def _exists(self) -> bool:
        # Nothing to find on disk: it talks to the tracking server. (Without
        # this, Kedro warns that exists() is not implemented.)
        return False

    def _describe(self) -> dict[str, Any]:
        return {"tag": self._tag, "prefix": self._prefix}
