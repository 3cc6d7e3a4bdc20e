"""The run summary names the MLflow run and the picture folders."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from ct_pipeline import hooks
from ct_pipeline.hooks import RunSummaryHook


def test_summary_names_the_run_and_the_pictures(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/08_reporting/reconstructions").mkdir(parents=True)
    # A stand-in run: touching MLflow's process-wide state here would leak into
    # the Kedro sessions of later tests.
    run = SimpleNamespace(info=SimpleNamespace(run_id="0123abcd"))
    monkeypatch.setattr(hooks.mlflow, "active_run", lambda: None)
    monkeypatch.setattr(hooks.mlflow, "last_active_run", lambda: run)
    monkeypatch.setattr(hooks.mlflow, "get_tracking_uri", lambda: "sqlite:///x.db")
    with caplog.at_level(logging.INFO, logger="ct_pipeline.hooks"):
        RunSummaryHook().after_pipeline_run(run_params={})
    assert "MLflow run 0123abcd in sqlite:///x.db" in caplog.text
    assert "kedro mlflow ui" in caplog.text
    assert str(tmp_path / "data/08_reporting/reconstructions") in caplog.text
    assert "DRR previews" not in caplog.text  # only folders that exist are named
