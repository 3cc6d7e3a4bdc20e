"""Where training metrics go: the one interface the training loop sees.

The glue implements it (``ct_pipeline.datasets.mlflow_sink.MlflowSink`` for
MLflow runs, ``LoggingSink`` for the log), so the library knows no tracker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricSink(Protocol):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...
