"""The run summary names the MLflow run and the picture folders."""

from __future__ import annotations

import logging

import mlflow

from ct_pipeline.hooks import RunSummaryHook


def test_summary_names_the_run_and_the_pictures(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/08_reporting/reconstructions").mkdir(parents=True)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        with mlflow.start_run() as run:
            pass
        with caplog.at_level(logging.INFO, logger="ct_pipeline.hooks"):
            RunSummaryHook().after_pipeline_run(run_params={})
    finally:
        mlflow.set_tracking_uri(previous)
    assert run.info.run_id in caplog.text
    assert "kedro mlflow ui" in caplog.text
    assert str(tmp_path / "data/08_reporting/reconstructions") in caplog.text
    assert "DRR previews" not in caplog.text  # only folders that exist are named
