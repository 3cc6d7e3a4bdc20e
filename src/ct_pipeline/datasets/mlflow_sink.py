"""MLflow implementation of the training's ``MetricSink``.

``MlflowSink`` logs into a run that already exists (the Kedro node's active
run): spawned DDP workers do not inherit MLflow's active-run state, so rank 0
gets the tracking URI and run id and writes through an explicit client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# MLflow's log_batch accepts at most 100 parameters per call.
MLFLOW_MAX_PARAMS_PER_BATCH = 100


class MlflowSink:
    """Logs to run ``run_id`` at ``tracking_uri``; picklable (the client is made lazily)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id: str | None = run_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.tracking_uri, self.run_id = state["tracking_uri"], state["run_id"]
        self._client = None

    @property
    def client(self) -> Any:
        # Imported here: mlflow takes seconds to import, and only rank 0 of a
        # run that tracks needs it.
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, int(step)) for key, value in metrics.items()
        ]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log with MLflow's own str() convention, skipping keys the run already has.

        kedro-mlflow may have logged the same ``params:train`` keys; MLflow
        refuses to change a parameter, so a differing value (e.g. ``[0, 90]``
        against ``[0.0, 90.0]``) is reported and kept, not fatal mid-training.
        """
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        values = {key: str(value) for key, value in params.items()}
        differing = {
            k: (existing[k], v)
            for k, v in values.items()
            if k in existing and existing[k] != v
        }
        if differing:
            logger.warning(
                "run %s keeps its earlier values of params (earlier, new): %s",
                self.run_id,
                differing,
            )
        batch = [Param(k, v) for k, v in values.items() if k not in existing]
        for start in range(0, len(batch), MLFLOW_MAX_PARAMS_PER_BATCH):
            self.client.log_batch(
                self.run_id, params=batch[start : start + MLFLOW_MAX_PARAMS_PER_BATCH]
            )
