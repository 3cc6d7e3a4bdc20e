"""The whole project on a tiny phantom set: ``kedro run`` (drr + train + evaluate),
then ``kedro run --pipelines predict``, checked through the files and the MLflow run.

The run itself happens once, in the session fixture ``tiny_project`` (conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEST_METRICS = ("psnr_3d", "ssim_3d", "psnr_slice", "ssim_slice", "mae_hu")


def _volume_size(project: Any) -> int:
    return project.params["preprocess"]["volume_size"]


def _epochs(project: Any) -> int:
    return project.params["train"]["epochs"]


def _patients(project: Any) -> list[str]:
    source = json.loads((project.data / "03_primary/ct_source.json").read_text())
    return source["patients"]


def _model(project: Any) -> str:
    """The trained model's name, that of its folders: the model and its views."""
    train = project.params["train"]
    return f"{train['model']}-{train['num_views']}v"


def _split(project: Any) -> dict[str, list[str]]:
    return json.loads((project.data / "05_model_input/patient_split.json").read_text())


def _load_ct(path: Path):
    from ct_pipeline.ct import load_ct

    return load_ct(path)


@pytest.fixture(scope="module")
def mlflow_run(tiny_project: Any):
    """The finished MLflow run of the default pipeline, read back from sqlite."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tiny_project.tracking_uri)
    conf = yaml.safe_load((tiny_project.path / "conf/base/mlflow.yml").read_text())
    experiment = client.get_experiment_by_name(conf["tracking"]["experiment"]["name"])
    assert experiment is not None
    name = _model(tiny_project)  # the run says what it trained
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.runName = '{name}'"
    )
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def test_phantoms_are_made_and_rendered_for_every_patient(tiny_project):
    params = tiny_project.params
    patients = _patients(tiny_project)
    source = json.loads((tiny_project.data / "03_primary/ct_source.json").read_text())
    assert source["source"] == "phantom"
    assert len(patients) == params["phantoms"]["count"]

    from ct_pipeline.datasets import DRRSetDataset

    views = params["drr"]["num_views"]
    rows, cols = params["drr"]["geometry"]["detector_px"]
    for patient in patients:
        drr = DRRSetDataset(str(tiny_project.data / f"04_feature/drr/{patient}.npz"))
        drr_set = drr.load()
        assert drr_set.projections.shape == (views, rows, cols)
        # Line integrals through a body: finite, non-negative, not all air.
        assert np.isfinite(drr_set.projections).all()
        assert drr_set.projections.min() >= 0 and drr_set.projections.max() > 1
        preview = tiny_project.data / f"08_reporting/drr_previews/{patient}.png"
        assert preview.read_bytes().startswith(PNG_SIGNATURE)


def test_patient_split_is_disjoint_and_covers_every_patient(tiny_project):
    split = _split(tiny_project)
    members = [p for name in ("train", "val", "test") for p in split[name]]
    assert len(members) == len(set(members)), split
    assert sorted(members) == sorted(_patients(tiny_project))
    assert len(split["val"]) >= 1 and len(split["test"]) >= 2


def test_best_model_loads_weights_only_and_rebuilds_the_network(tiny_project):
    import torch

    from ct_pipeline.inference import ModelBundle

    bundle = ModelBundle.from_dict(
        torch.load(
            tiny_project.data / f"06_models/{_model(tiny_project)}/best_model.pt",
            weights_only=True,
        )
    )
    assert bundle.model == tiny_project.params["train"]["model"]
    assert bundle.grid.size == _volume_size(tiny_project)
    network = bundle.network()
    assert not network.training


def test_test_reconstructions_are_nifti_on_the_ct_grid(tiny_project):
    import nibabel as nib

    test = _split(tiny_project)["test"]
    folder = (
        tiny_project.data
        / f"07_model_output/{_model(tiny_project)}/test_reconstructions"
    )
    assert sorted(p.name for p in folder.iterdir()) == [f"{p}.nii.gz" for p in test]
    for patient in test:
        image = nib.load(folder / f"{patient}.nii.gz")
        truth = _load_ct(tiny_project.data / f"03_primary/ct/{patient}.nii.gz")
        assert image.shape == truth.hu.shape == (_volume_size(tiny_project),) * 3
        np.testing.assert_allclose(image.affine, truth.affine, atol=1e-4)


def test_mlflow_run_holds_flat_parameters(tiny_project, mlflow_run):
    _, run = mlflow_run
    assert run.info.status == "FINISHED"
    params = tiny_project.params
    logged = run.data.params
    assert logged["train.lr"] == str(params["train"]["lr"])
    assert logged["train.epochs"] == str(_epochs(tiny_project))
    assert logged["drr.geometry.sdd_mm"] == str(params["drr"]["geometry"]["sdd_mm"])
    assert logged["preprocess.volume_size"] == str(_volume_size(tiny_project))


def test_mlflow_run_holds_one_training_point_per_epoch(tiny_project, mlflow_run):
    client, run = mlflow_run
    for key in ("train/loss", "val/psnr_3d"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(
            range(1, _epochs(tiny_project) + 1)
        ), key
        assert all(np.isfinite(m.value) for m in history)


def test_mlflow_run_holds_test_and_baseline_metrics(tiny_project, mlflow_run):
    import pandas as pd

    _, run = mlflow_run
    metrics = run.data.metrics
    for name in TEST_METRICS:
        assert np.isfinite(metrics[f"test/{name}"]), name
    # The baseline is the training-mean volume: recompute its PSNR from the table.
    table = pd.read_csv(
        tiny_project.data
        / f"08_reporting/{_model(tiny_project)}/test_metrics_per_patient.csv"
    )
    baseline = table[table["method"] == "mean_volume"]
    assert sorted(baseline["patient_id"]) == _split(tiny_project)["test"]
    assert metrics["baseline_mean/psnr_3d"] == pytest.approx(
        baseline["psnr_3d"].mean(), abs=1e-3
    )
    # Two epochs of the tiny model plus the refinement: +0.9 dB here. A model
    # that learnt nothing (or a pipeline that scored the wrong volume) would
    # not clear the training-mean volume by half a decibel.
    assert metrics["test/psnr_3d"] > metrics["baseline_mean/psnr_3d"] + 0.5


def test_mlflow_run_is_tagged(tiny_project, mlflow_run):
    _, run = mlflow_run
    tags = run.data.tags
    assert tags["ct_pipeline.model"] == tiny_project.params["train"]["model"]
    assert tags["ct_pipeline.num_views"] == str(
        tiny_project.params["train"]["num_views"]
    )
    assert tags["ct_pipeline.data_source"] == "phantom"
    # The count of the network the run's best_model rebuilds, parameter by parameter.
    import torch

    from ct_pipeline.inference import ModelBundle

    bundle = ModelBundle.from_dict(
        torch.load(
            tiny_project.data / f"06_models/{_model(tiny_project)}/best_model.pt",
            weights_only=True,
        )
    )
    counted = sum(p.numel() for p in bundle.network().parameters())
    assert int(tags["n_parameters"]) == counted == bundle.n_parameters
    assert tags["ct_pipeline.trained_in_run"] == run.info.run_id
    assert tags["ct_pipeline.pid"].isdigit() and tags["ct_pipeline.host"]


def test_mlflow_run_records_the_data_it_trained_on(tiny_project, mlflow_run):
    """Read from the DRR sets and CTs, so runs on other data differ in Compare."""
    _, run = mlflow_run
    params, config = run.data.params, tiny_project.params
    geometry = config["drr"]["geometry"]
    assert params["data.volume_size"] == str(config["preprocess"]["volume_size"])
    assert params["data.geometry.detector_px"] == str(geometry["detector_px"])
    assert float(params["data.geometry.pixel_mm"]) == geometry["pixel_mm"]
    assert params["data.source"] == "phantom"
    assert (
        len(params["data.rendered_angles_deg"].split(",")) == config["drr"]["num_views"]
    )
    assert int(params["data.patients.train"]) == len(_split(tiny_project)["train"])


def test_mlflow_run_has_system_metrics(mlflow_run):
    _, run = mlflow_run
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics


def test_mlflow_run_holds_reports_and_figures(tiny_project, mlflow_run):
    client, run = mlflow_run
    run_id = run.info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "headline_reconstruction.png",
        "drr_views_test_patients.png",
        "training_curves.png",
        "attention_maps.png",
        "test_metrics_per_patient.csv",
    } <= top
    figures = {a.path for a in client.list_artifacts(run_id, "reconstructions")}
    figures_count = tiny_project.params["evaluate"]["figures_patients"]
    expected = sorted(_split(tiny_project)["test"])[:figures_count]
    assert figures == {f"reconstructions/{p}.png" for p in expected}


def test_logged_model_reconstructs_one_drr_set(tiny_project, mlflow_run):
    import mlflow
    import torch

    from ct_pipeline.datasets import DRRSetDataset

    client, run = mlflow_run
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert [m.name for m in models] == ["reconstructor"]
    patient = _split(tiny_project)["test"][0]
    drr = DRRSetDataset(str(tiny_project.data / f"04_feature/drr/{patient}.npz")).load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mlflow.set_tracking_uri(tiny_project.tracking_uri)
        served = mlflow.pyfunc.load_model(models[0].model_uri)
        output = served.predict(
            {
                "projections": drr.projections,
                "angles_deg": drr.angles_deg,
                "isocentre_mm": drr.isocentre_mm,
            }
        )
    finally:
        torch.set_num_threads(threads)
    assert output["hu"].shape == (_volume_size(tiny_project),) * 3
    truth = _load_ct(tiny_project.data / f"03_primary/ct/{patient}.nii.gz")
    np.testing.assert_allclose(output["affine"], truth.affine, atol=1e-4)
    # Same weights, same views: the served model equals the evaluation's output.
    evaluated = _load_ct(
        tiny_project.data
        / f"07_model_output/{_model(tiny_project)}/test_reconstructions/{patient}.nii.gz"
    )
    np.testing.assert_allclose(output["hu"], evaluated.hu, atol=0.5)


def test_session_leaves_no_mlflow_run_active(tiny_project):
    assert tiny_project.leaked_runs == 0


@pytest.fixture(scope="module")
def predicted(tiny_project: Any) -> Any:
    tiny_project.run("predict")
    return tiny_project


def test_predict_pipeline_writes_every_test_volume_on_its_ct_grid(predicted):
    # The model's training and validation patients are skipped by default.
    folder = predicted.data / f"07_model_output/{_model(predicted)}/predictions"
    split = _split(predicted)
    patients = sorted(set(_patients(predicted)) - set(split["train"] + split["val"]))
    assert patients == sorted(split["test"])
    assert sorted(p.name for p in folder.iterdir()) == [f"{p}.nii.gz" for p in patients]
    for patient in patients:
        prediction = _load_ct(folder / f"{patient}.nii.gz")
        truth = _load_ct(predicted.data / f"03_primary/ct/{patient}.nii.gz")
        assert prediction.hu.shape == truth.hu.shape
        assert np.allclose(prediction.affine, truth.affine, atol=1e-4)
        assert np.isfinite(prediction.hu).all()


def test_logged_model_carries_a_model_card_of_its_run(
    tiny_project, mlflow_run, tmp_path
):
    client, run = mlflow_run
    (model,) = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    import mlflow

    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    # What `mlflow.pyfunc.load_model` fetches: the card lies beside MLmodel.
    folder = Path(
        mlflow.artifacts.download_artifacts(model.model_uri, dst_path=str(tmp_path))
    )
    assert (folder / "MLmodel").is_file()
    card = (folder / "MODEL_CARD.md").read_text()
    tags, metrics = run.data.tags, run.data.metrics
    assert (
        f"{tags['ct_pipeline.num_views']} views at {tags['ct_pipeline.angles_deg']} degrees"
        in card
    )
    assert f"| {metrics['test/psnr_3d']:.2f} |" in card
    assert "synthetic chest phantoms" in card
    assert "not for clinical use" in card


def test_the_model_is_registered_under_its_run_name_with_an_alias(
    tiny_project, mlflow_run
):
    client, run = mlflow_run
    name = f"ct_pipeline-{run.data.tags['mlflow.runName']}"
    candidate = client.get_model_version_by_alias(name, "candidate")
    assert candidate.run_id == run.info.run_id
    # The newest version carries the alias: one version per training.
    versions = client.search_model_versions(f"name = '{name}'")
    assert int(candidate.version) == max(int(v.version) for v in versions)


def test_the_logged_model_installs_torch_as_pinned_and_carries_its_code(
    tiny_project, mlflow_run, tmp_path
):
    from importlib.metadata import version

    import mlflow

    client, run = mlflow_run
    (model,) = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    folder = Path(
        mlflow.artifacts.download_artifacts(model.model_uri, dst_path=str(tmp_path))
    )
    requirements = (folder / "requirements.txt").read_text().split()
    assert f"torch=={version('torch').split('+')[0]}" in requirements
    assert "ct_pipeline" not in requirements  # on no package index
    assert (folder / "code/ct_pipeline/inference.py").is_file()


def test_the_experiment_opens_for_model_training_and_the_run_says_what_it_is(
    mlflow_run,
):
    client, run = mlflow_run
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    description = run.data.tags["mlflow.note.content"]
    assert f"from {run.data.tags['ct_pipeline.num_views']} views" in description


def test_the_logged_model_has_a_signature_and_an_input_example(
    tiny_project, mlflow_run, tmp_path
):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    client, run = mlflow_run
    (model,) = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    folder = mlflow.artifacts.download_artifacts(
        model.model_uri, dst_path=str(tmp_path)
    )
    logged = Model.load(folder)
    signature = logged.signature
    assert signature is not None
    assert signature.inputs.input_names() == [
        "projections",
        "angles_deg",
        "isocentre_mm",
    ]
    size = _volume_size(tiny_project)
    assert [spec.shape for spec in signature.outputs.inputs] == [(size,) * 3, (4, 4)]
    # The example: a test patient's views, those the model takes.
    example = logged.load_input_example(folder)
    views = tiny_project.params["train"]["num_views"]
    assert example["projections"].shape[0] == example["angles_deg"].shape[0] == views
    served = mlflow.pyfunc.load_model(folder)
    wrong = {**example, "projections": example["projections"].astype(np.float64)}
    with pytest.raises(MlflowException, match="dtype"):
        served.predict(wrong)


def test_the_run_holds_the_best_epoch_beside_the_last(mlflow_run):
    client, run = mlflow_run
    history = client.get_metric_history(run.info.run_id, "val/psnr_3d")
    best = max(history, key=lambda point: point.value)
    metrics = run.data.metrics
    assert metrics["best/epoch"] == best.step
    assert metrics["best/val_psnr_3d"] == pytest.approx(best.value)
    assert "best/val_ssim_3d" in metrics


def test_the_ui_link_opens_the_runs_table_on_columns_the_run_logged(mlflow_run):
    from ct_pipeline.hooks.results_view import SHARED_VIEW_TAG

    client, run = mlflow_run
    experiment = client.get_experiment(run.info.experiment_id)
    state = json.loads(experiment.tags[SHARED_VIEW_TAG])
    columns = state["selectedColumns"]
    assert state["columnOrder"] == columns and state["orderByKey"] == columns[0]
    # The UI shows a column only for a key some run holds: a renamed metric
    # would leave the results table empty again.
    logged = {f"metrics.`{k}`" for k in run.data.metrics}
    logged |= {f"tags.`{k}`" for k in run.data.tags}
    assert set(columns) <= logged, set(columns) - logged
    assert any(c.startswith("metrics.`test/") for c in columns)
