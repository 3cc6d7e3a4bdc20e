"""The MLflow UI's runs table opened on the results, not on empty columns.

MLflow 3's runs table shows no metric until a person picks columns, and opens
in its GenAI view unless asked for the model-training one. A *shared view* is
a runs-table state (columns, order, sort) stored as an experiment tag
``mlflow.sharedViewState.<key>``; the UI applies it to anyone who opens the
experiment's URL with ``viewStateShareKey=<key>``. Every tracked run sets it
(idempotently), so the link printed at the end of a run opens the table with
the test and real-CT figures, the kept epoch and the view count side by side,
and its chart view (``compareRunsMode=CHART``) on those scores and the curves.
"""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

SHARE_KEY = "results"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"
UI_ADDRESS = "http://127.0.0.1:5000"

# Left to right as a reader compares runs: the held-out phantoms, the real
# chest CT as shipped and from the network alone, the epoch kept, then what
# differs between runs.
METRIC_COLUMNS = (
    "test/psnr_3d",
    "test/ssim_3d",
    "realct/psnr_3d",
    "realct_network/psnr_3d",
    "best/val_psnr_3d",
    "best/epoch",
)
# Tags, not parameters: training and evaluate runs both carry them.
TAG_COLUMNS = ("ct_pipeline.model", "ct_pipeline.num_views")
# The chart view: the scores as bars, one per run, then the training curves.
BAR_CHARTS = METRIC_COLUMNS[:4]
LINE_CHARTS = ("val/psnr_3d", "train/loss")


def _column(kind: str, key: str) -> str:
    # The UI's own spelling of a column: metrics.`test/psnr_3d`.
    return f"{kind}.`{key}`"


def _chart(kind: str, key: str, section: str) -> dict[str, object]:
    chart: dict[str, object] = {
        "type": kind,
        "uuid": f"{section}-{key}",
        "metricSectionId": section,
        "isGenerated": False,
        "deleted": False,
        "metricKey": key,
        "displayName": key,
    }
    if kind == "LINE":
        chart |= {"selectedMetricKeys": [key], "xAxisKey": "step", "yAxisKey": "metric"}
    return chart


def view_state() -> dict[str, object]:
    """The runs-page state the UI restores from the tag (its own field names):
    table columns and sort, and the chart view's sections."""
    columns = [_column("metrics", key) for key in METRIC_COLUMNS] + [
        _column("tags", key) for key in TAG_COLUMNS
    ]
    sections = {"results": "Results", "training": "Training"}
    return {
        "orderByKey": _column("metrics", METRIC_COLUMNS[0]),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
        "compareRunSections": [
            {"uuid": uuid, "name": name, "display": True, "isReordered": False}
            for uuid, name in sections.items()
        ],
        "compareRunCharts": [_chart("BAR", key, "results") for key in BAR_CHARTS]
        + [_chart("LINE", key, "training") for key in LINE_CHARTS],
        # Sections as given: the UI adds no chart per metric of its own.
        "isAccordionReordered": True,
    }


def runs_url(experiment_id: str, share_key: str | None = None) -> str:
    """The UI address of ``experiment_id``'s runs in the model-training view."""
    url = (
        f"{UI_ADDRESS}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )
    return f"{url}&viewStateShareKey={share_key}" if share_key else url


def results_view_url(client: MlflowClient, experiment_id: str) -> str:
    """Stores the results view on ``experiment_id``; the UI address that opens it."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG, json.dumps(view_state()))
    return runs_url(experiment_id, SHARE_KEY)
