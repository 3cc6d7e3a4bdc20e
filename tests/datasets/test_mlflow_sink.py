import pickle

import pytest

from ct_pipeline.datasets.mlflow_sink import MlflowSink
from ct_pipeline.training.sink import MetricSink


@pytest.fixture
def mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(
        "sink", artifact_location=str(tmp_path / "artifacts")
    )
    return uri, client, client.create_run(experiment).info.run_id


def test_mlflow_sink_logs_into_an_existing_run_after_pickling(mlflow_run):
    uri, client, run_id = mlflow_run
    sink = MlflowSink(uri, run_id)
    assert isinstance(sink, MetricSink)
    sink.log_params({"warm": 1})  # a client exists now; pickling must drop it
    copy = pickle.loads(pickle.dumps(sink))
    assert (copy.tracking_uri, copy.run_id) == (uri, run_id)

    params = {f"train.p{i:03d}": i for i in range(150)}  # over MLflow's 100 per batch
    copy.log_params({**params, "train.angles_deg": None})
    for epoch in (1, 2, 3):
        copy.log_metrics(
            {"train/loss": 1.0 / epoch, "val/psnr_3d": 20.0 + epoch}, step=epoch
        )

    data = client.get_run(run_id).data
    assert (
        data.params["train.p149"] == "149" and data.params["train.angles_deg"] == "None"
    )
    history = client.get_metric_history(run_id, "val/psnr_3d")
    assert sorted((m.step, m.value) for m in history) == [
        (1, 21.0),
        (2, 22.0),
        (3, 23.0),
    ]
    assert data.metrics["train/loss"] == pytest.approx(1 / 3)


def test_params_already_in_the_run_are_kept_not_fatal(mlflow_run, caplog):
    uri, client, run_id = mlflow_run
    client.log_param(
        run_id, "train.hu_window", "[-1000, 1500]"
    )  # as kedro-mlflow logged it
    MlflowSink(uri, run_id).log_params(
        {"train.hu_window": [-1000.0, 1500.0], "train.lr": 0.002}
    )
    params = client.get_run(run_id).data.params
    assert params == {"train.hu_window": "[-1000, 1500]", "train.lr": "0.002"}
    assert "keeps its earlier values" in caplog.text


def test_figures_of_an_earlier_run_do_not_survive_a_rerun(mlflow_run, tmp_path):
    import mlflow
    from matplotlib.figure import Figure

    from ct_pipeline.datasets import MlflowFiguresDataset

    uri, client, run_id = mlflow_run
    folder = tmp_path / "figures"
    dataset = MlflowFiguresDataset(str(folder), artifact_path="figs")
    dataset.save({"patient_a": Figure(figsize=(1, 1)), "patient_b": Figure()})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            dataset.save({"patient_c": Figure(figsize=(1, 1))})
    finally:
        mlflow.set_tracking_uri(previous)
    assert sorted(p.name for p in folder.iterdir()) == ["patient_c.png"]
    logged = client.list_artifacts(run_id, "figs")
    assert [a.path for a in logged] == ["figs/patient_c.png"]
