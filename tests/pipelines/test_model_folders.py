"""Each trained model in folders of its own: trainings at other views side by
side, ``evaluate`` and ``predict`` choosing one (``model``, else the latest),
and predictions written as they finish."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ct_pipeline.ct import CTVolume
from ct_pipeline.datasets import CTFolderDataset
from ct_pipeline.hooks.model_folders import (
    ModelChoiceError,
    choose_model,
    trained_models,
    training_name,
)


def _volume(value: float) -> CTVolume:
    """Air around one voxel of ``value`` HU."""
    hu = np.full((8, 8, 8), -1000.0, dtype=np.float32)
    hu[4, 4, 4] = value
    return CTVolume(hu=hu, affine=np.eye(4))


def test_trained_models_are_the_folders_holding_a_model_oldest_first(tmp_path):
    for age, name in enumerate(["small-8v", "small-2v"]):
        model = tmp_path / name / "best_model.pt"
        model.parent.mkdir()
        model.write_bytes(b"")
        os.utime(model, (age, age))
    (tmp_path / "checkpoints").mkdir()  # no model file: not a model
    template = str(tmp_path / "{model}" / "best_model.pt")
    assert trained_models(template) == ["small-8v", "small-2v"]
    assert trained_models(str(tmp_path / "absent" / "{model}" / "m.pt")) == []


def test_the_model_asked_for_else_the_latest_else_an_error_naming_them():
    assert choose_model(None, ["a-2v", "b-8v"], "data/06_models") == "b-8v"
    assert choose_model("a-2v", ["a-2v", "b-8v"], "data/06_models") == "a-2v"
    with pytest.raises(ModelChoiceError, match=r"'c-4v'.*trained: a-2v, b-8v"):
        choose_model("c-4v", ["a-2v", "b-8v"], "data/06_models")
    with pytest.raises(ModelChoiceError, match="no trained model"):
        choose_model(None, [], "data/06_models")


def test_a_training_is_named_by_its_model_and_views():
    assert training_name({"model": "small", "num_views": 2}) == "small-2v"
    assert training_name({"model": "unet_tiny", "num_views": 8}) == "unet_tiny-8v"


def test_an_interrupted_incremental_write_keeps_the_finished_patients(tmp_path):
    """Predictions: each file as soon as it is done, the folder's others kept."""
    folder = CTFolderDataset(str(tmp_path / "predictions"), incremental=True)
    folder.save({"old": _volume(10.0)})

    def interrupted() -> CTVolume:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        folder.save({"p1": lambda: _volume(20.0), "p2": interrupted})
    assert sorted(folder.load()) == ["old", "p1"]
    assert float(folder.load()["p1"]().hu.max()) == 20.0
    # No temporary file is left where a reader of the folder would see it.
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "old.nii.gz",
        "p1.nii.gz",
    ]


def test_trainings_at_other_views_leave_both_and_predict_keeps_finished_patients(
    fresh_tiny_project: Any, monkeypatch: pytest.MonkeyPatch
):
    project = fresh_tiny_project
    project.run()  # drr, then the 2-view training and its evaluation
    project.run("train", params={"train": {"num_views": 4}})
    for name, views in (("tiny-2v", 2), ("tiny-4v", 4)):
        assert (project.data / f"06_models/{name}/best_model.pt").is_file()
        table = pd.read_csv(project.data / f"08_reporting/{name}/method_comparison.csv")
        assert set(table["views"]) == {views}
        assert (
            project.data / f"08_reporting/{name}/headline_reconstruction.png"
        ).is_file()

    # An unknown model stops predict before anything is written.
    with pytest.raises(ModelChoiceError, match="tiny-2v, tiny-4v"):
        project.run("predict", params={"model": "tiny-8v"})
    assert not (project.data / "07_model_output/tiny-8v").exists()

    # The older model by name; its predictions and one figure per patient.
    project.run("predict", params={"model": "tiny-2v"})
    predictions = project.data / "07_model_output/tiny-2v/predictions"
    patients = sorted(p.name.removesuffix(".nii.gz") for p in predictions.iterdir())
    assert len(patients) >= 2
    figures = project.data / "08_reporting/tiny-2v/prediction_figures"
    assert sorted(p.stem for p in figures.iterdir()) == patients
    assert not (project.data / "07_model_output/tiny-4v/predictions").exists()

    # Interrupted after its first patient (the latest model: tiny-4v).
    import ct_pipeline.pipelines.predict.nodes as nodes

    done: list[int] = []
    reconstruct = nodes.reconstruct

    def first_only(*args: Any) -> CTVolume:
        if done:
            raise KeyboardInterrupt
        done.append(1)
        return reconstruct(*args)

    monkeypatch.setattr(nodes, "reconstruct", first_only)
    with pytest.raises(KeyboardInterrupt):
        project.run("predict")
    kept = project.data / "07_model_output/tiny-4v/predictions"
    assert [p.name for p in kept.iterdir()] == [f"{patients[0]}.nii.gz"]
    assert len(list(predictions.iterdir())) == len(patients)  # tiny-2v's untouched
