"""Where training metrics go: the one interface the training loop sees.

The glue implements it (``ct_pipeline.datasets.mlflow_sink.MlflowSink`` for
MLflow runs, ``LoggingSink`` for the log), so the library knows no tracker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricSink(Protocol):
    # The tracking run the metrics go to (None: no tracker), recorded in the
    # checkpoint so that a resumed run is linked to the one it continues.
    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...
