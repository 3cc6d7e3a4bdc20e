"""evaluate and predict check what they read before they reconstruct: the
split and grid the model was trained on, and plausible line integrals."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.datasets import CTFolderDataset, PatientFolderDataset
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.inference import ModelBundle
from ct_pipeline.pipelines.evaluate.nodes import (
    check_model_matches_data,
    reconstruct_test_set,
)
from ct_pipeline.pipelines.predict.nodes import check_inputs, reconstruct_volumes
from ct_pipeline.training import split_patients

GEOMETRY = Geometry(detector_px=(8, 8))
GRID = CubeGrid(16, 24.0)
PATIENTS = [f"p{i:02d}" for i in range(10)]
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _bundle(split: dict[str, list[str]] | None) -> ModelBundle:
    return ModelBundle(
        state_dict={},
        model="tiny",
        model_overrides={},
        geometry=GEOMETRY,
        grid=GRID,
        angles_deg=(0.0, 90.0),
        hu_window=(-1000.0, 1500.0),
        split=None if split is None else {k: tuple(v) for k, v in split.items()},
    )


def _truths(folder: Path, grid: CubeGrid, patients: list[str]) -> dict:
    """Patients' cubes on ``grid`` as the catalogue hands them: loaders of files."""
    dataset = CTFolderDataset(str(folder))
    hu = np.full((grid.size,) * 3, -1000.0, dtype=np.float32)
    dataset.save({p: CTVolume(hu=hu, affine=grid.affine) for p in patients})
    return dataset.load()


def _drr_sets(folder: Path, projections: dict[str, np.ndarray], geometry=GEOMETRY):
    dataset = PatientFolderDataset(
        str(folder), "ct_pipeline.datasets.DRRSetDataset", ".npz"
    )
    dataset.save(
        {
            p: DRRSet(
                projections=values.astype(np.float32),
                angles_deg=np.array([0.0, 45.0, 90.0]),
                geometry=geometry,
                isocentre_mm=np.zeros(3),
            )
            for p, values in projections.items()
        }
    )
    return dataset.load()


def _plausible() -> np.ndarray:
    return np.full((3, 8, 8), 4.0)  # 200 mm of water


def test_evaluate_refuses_test_patients_the_model_trained_on(tmp_path):
    trained_on = split_patients(PATIENTS, FRACTIONS, seed=7)
    resplit = split_patients(PATIENTS, FRACTIONS, seed=1)
    seen = set(resplit["test"]) & (set(trained_on["train"]) | set(trained_on["val"]))
    assert seen  # the re-split tests on patients the model has seen
    truths = _truths(tmp_path / "ct", GRID, PATIENTS)
    with pytest.raises(ValueError, match="training or validation patients") as error:
        # No DRR set is needed: the refusal comes before any reconstruction.
        reconstruct_test_set({}, _bundle(trained_on), resplit, truths)
    assert "split.seed" in str(error.value)
    assert "kedro run --pipelines train" in str(error.value)
    check_model_matches_data(_bundle(trained_on), trained_on, truths)


def test_evaluate_refuses_ground_truth_on_another_grid(tmp_path):
    split = split_patients(PATIENTS, FRACTIONS, seed=7)
    finer = _truths(tmp_path / "ct", CubeGrid(16, 12.0), PATIENTS)
    with pytest.raises(ValueError, match="another grid") as error:
        reconstruct_test_set({}, _bundle(split), split, finer)
    message = str(error.value)
    for patient in split["test"]:
        assert str(tmp_path / "ct" / f"{patient}.nii.gz") in message
    assert "16^3 voxels of 12 mm" in message
    assert "preprocess.volume_size=16,preprocess.target_spacing_mm=24" in message


def test_an_older_bundle_without_a_split_is_scored_with_a_warning(tmp_path, caplog):
    split = split_patients(PATIENTS, FRACTIONS, seed=7)
    truths = _truths(tmp_path / "ct", GRID, PATIENTS)
    old = ModelBundle.from_dict(
        {k: v for k, v in _bundle(split).to_dict().items() if k != "split"}
    )
    assert old.split is None
    with caplog.at_level(logging.WARNING):
        check_model_matches_data(old, split, truths)
    assert "records no training split" in caplog.text


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: np.where(np.arange(p.size).reshape(p.shape) == 5, np.nan, p),
            "1 of 192 line integrals are not finite",
        ),
        (lambda p: -p, "must be >= 0"),
        (lambda p: p * 1000, "scaled"),
    ],
)
def test_predict_refuses_implausible_line_integrals_naming_the_file(
    tmp_path, damage, message
):
    sets = _drr_sets(tmp_path / "drr", {"a": _plausible(), "b": damage(_plausible())})
    with pytest.raises(ValueError, match=message) as error:
        reconstruct_volumes(sets, _bundle(None))
    lines = str(error.value).splitlines()
    assert "nothing was written" in lines[0]
    assert len(lines) == 2 and lines[1].startswith(
        f"  - {tmp_path / 'drr' / 'b.npz'}: "
    )


def test_predict_accepts_small_negative_noise(tmp_path):
    noisy = _plausible()
    noisy[0, 0, 0] = -0.05  # 2.5 mm of water below 0
    check_inputs(_drr_sets(tmp_path / "drr", {"a": noisy}), _bundle(None))


def test_predict_names_the_file_of_another_geometry_or_missing_views(tmp_path):
    other = dataclasses.replace(GEOMETRY, sdd_mm=1400.0)
    sets = _drr_sets(tmp_path / "g", {"a": _plausible()}, geometry=other)
    with pytest.raises(ValueError, match="geometry") as error:
        check_inputs(sets, _bundle(None))
    assert str(tmp_path / "g" / "a.npz") in str(error.value)
    sets = _drr_sets(tmp_path / "v", {"a": _plausible()})
    with pytest.raises(ValueError, match="view 30.0 deg was not rendered") as error:
        check_inputs(sets, dataclasses.replace(_bundle(None), angles_deg=(0.0, 30.0)))
    assert str(tmp_path / "v" / "a.npz") in str(error.value)


@pytest.mark.parametrize("skip", [True, False])
def test_predict_skips_the_model_s_own_patients(caplog, skip):
    # Reconstructing a training or validation patient says nothing about the
    # model: predict leaves them out unless asked, and says how many.
    from ct_pipeline.pipelines.predict import nodes

    split = {"train": ["p00", "p01"], "val": ["p02"], "test": ["p03"]}
    sets = {p: object() for p in ["p00", "p01", "p02", "p03", "new"]}
    with caplog.at_level(logging.INFO):
        chosen = nodes.select_patients(sets, _bundle(split), skip)
    if skip:
        assert list(chosen) == ["p03", "new"]
        assert "skips 3 of 5 DRR sets" in caplog.text
    else:
        assert chosen == sets
