"""Project hooks: check every parameter before a run starts; tell the user
where a run's results are when it ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from mlflow.exceptions import MlflowException

from ct_pipeline.pipelines.checks import check_parameters

logger = logging.getLogger(__name__)

REPORTING = Path("data/08_reporting")


class ParameterCheckHook:
    """Refuses bad parameters of any stage before a node runs or a file is written."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        check_parameters(context.params)


# Seconds between samples of CPU, memory (and GPU) use, logged as system/* metrics.
SYSTEM_METRICS_INTERVAL_S = 5.0


class SystemMetricsHook:
    """Every MLflow run records CPU and memory use, and the GPUs' where NVIDIA's
    management library is installed (``pip install -e ".[gpu]"``): MLflow's own
    system-metrics logging, in place of watching ``nvidia-smi``."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(1)
        mlflow.enable_system_metrics_logging()


class RunSummaryHook:
    """Logs the MLflow run id, how to open the UI, and the picture folders."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        # kedro-mlflow may already have closed its run: last_active_run still knows it.
        try:
            run = mlflow.active_run() or mlflow.last_active_run()
        except MlflowException:
            # The process's last run lives in another tracking store (several
            # sessions in one process, e.g. a notebook): nothing to point at.
            run = None
        lines = [f"Pictures and tables: {REPORTING.resolve()}/"]
        if (REPORTING / "drr_previews").is_dir():
            lines.append(
                f"  DRR previews:    {(REPORTING / 'drr_previews').resolve()}/"
            )
        if (REPORTING / "reconstructions").is_dir():
            lines.append(
                f"  reconstructions: {(REPORTING / 'reconstructions').resolve()}/"
            )
        if run is not None:
            lines += [
                f"MLflow run {run.info.run_id} in {mlflow.get_tracking_uri()}",
                "  open it with `kedro mlflow ui` (or `make mlflow-ui`), then http://127.0.0.1:5000",
            ]
        logger.info("\n".join(lines))
