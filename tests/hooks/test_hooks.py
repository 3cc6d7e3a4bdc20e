"""The run summary names the MLflow run and the picture folders."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from ct_pipeline import hooks
from ct_pipeline.hooks import RunSummaryHook


def _stand_in_run(monkeypatch) -> None:
    # A stand-in run: touching MLflow's process-wide state here would leak into
    # the Kedro sessions of later tests.
    run = SimpleNamespace(info=SimpleNamespace(run_id="0123abcd", experiment_id="7"))
    monkeypatch.setattr(hooks.mlflow, "active_run", lambda: None)
    monkeypatch.setattr(hooks.mlflow, "last_active_run", lambda: run)
    monkeypatch.setattr(hooks.mlflow, "get_tracking_uri", lambda: "sqlite:///x.db")


def test_summary_names_the_run_and_the_results_view(monkeypatch, caplog):
    _stand_in_run(monkeypatch)
    stored: list[str] = []
    monkeypatch.setattr(
        hooks,
        "results_view_url",
        lambda client, experiment_id: stored.append(experiment_id) or "http://view",
    )
    with caplog.at_level(logging.INFO, logger="ct_pipeline.hooks"):
        RunSummaryHook().after_pipeline_run(run_params={})
    assert "MLflow run 0123abcd in sqlite:///x.db" in caplog.text
    assert f"`{hooks.ui_command()}`" in caplog.text
    assert stored == ["7"] and "then http://view" in caplog.text


def test_a_results_view_that_cannot_be_stored_costs_only_the_view(monkeypatch, caplog):
    """The tag is written after the run: a store that refuses it must not stop
    the hooks that commit the data layers."""
    _stand_in_run(monkeypatch)

    def refused(client, experiment_id):
        raise hooks.MlflowException("database is locked")

    monkeypatch.setattr(hooks, "results_view_url", refused)
    with caplog.at_level(logging.INFO, logger="ct_pipeline.hooks"):
        RunSummaryHook().after_pipeline_run(run_params={})
    assert "The results view was not stored: database is locked" in caplog.text
    assert "#/experiments/7/runs?workflowType=machine_learning" in caplog.text
    assert "viewStateShareKey" not in caplog.text


def test_the_recommended_ui_command_runs_without_an_activated_environment():
    """Issue: the closing message recommended a bare `kedro`, off PATH in a fresh clone."""
    import os

    kedro, *arguments = hooks.ui_command().split(" ")
    assert arguments == ["mlflow", "ui"]
    assert os.access(kedro, os.X_OK), f"{kedro} is not an executable"


def test_runs_left_running_by_a_killed_process_are_marked_killed(tmp_path):
    """Issue: a kill -9 left the MLflow run RUNNING for ever."""
    import os
    import socket
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from ct_pipeline.hooks import OWNER_HOST, OWNER_PID, mark_killed_runs

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "a"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    runs = {}
    for name, pid, owner in (
        ("killed", gone.stdout.strip(), host),
        ("alive", str(os.getpid()), host),  # a parallel run still going
        ("elsewhere", gone.stdout.strip(), "another-host"),
    ):
        run = client.create_run(experiment, run_name=name)
        client.set_tag(run.info.run_id, OWNER_HOST, owner)
        client.set_tag(run.info.run_id, OWNER_PID, pid)
        runs[name] = run.info.run_id
    assert mark_killed_runs(client, host) == [runs["killed"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"killed": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING"}


def test_the_summary_names_what_the_run_wrote(tmp_path):
    """Issue: the closing summary should name what this run wrote (predictions for predict)."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import node, pipeline

    from ct_pipeline.datasets import CTFolderDataset
    from ct_pipeline.hooks import written_paths

    flow = pipeline(
        [
            node(lambda x: x, "drr", "predictions", name="a"),
            node(lambda x: x, "predictions", "scratch", name="b"),
        ]
    )
    catalog = DataCatalog(
        {
            "predictions": CTFolderDataset(str(tmp_path / "predictions")),
            "scratch": MemoryDataset(),
        }
    )
    assert written_paths(flow, catalog) == {
        "predictions": str((tmp_path / "predictions").resolve())
    }


def test_an_interrupted_pipeline_leaves_its_run_killed_not_finished(tmp_path):
    """Ctrl-C or SIGTERM is no Exception: without the hook MLflow's exit
    handler ended such a run as FINISHED."""
    import mlflow

    from ct_pipeline.hooks import RunOwnerHook

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        # An explicit experiment: earlier sessions in this process set another.
        experiment = mlflow.create_experiment("interrupted")
        statuses = {}
        for case in ("interrupted", "finished"):
            hook = RunOwnerHook()
            run = mlflow.start_run(experiment_id=experiment)
            hook.before_pipeline_run(run_params={})
            if case == "finished":
                hook.after_pipeline_run()
            hook.end_interrupted_run()  # what atexit calls
            mlflow.end_run()  # MLflow's own exit handler: FINISHED if still open
            statuses[case] = mlflow.get_run(run.info.run_id).info.status
    finally:
        mlflow.set_tracking_uri(previous)
    assert statuses == {"interrupted": "KILLED", "finished": "FINISHED"}
