"""Nodes of the ``predict`` pipeline and of the MLflow-logged inference pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume
from ct_pipeline.datasets.partitions import iter_partitions, load_one, partition_source
from ct_pipeline.drr import DRRSet
from ct_pipeline.evaluation.figures import radiograph_figure
from ct_pipeline.inference import (
    ModelBundle,
    check_input,
    network_volume,
    reconstruct,
    reproject,
    reprojection_scores,
)
from ct_pipeline.radiographs import (
    NO_SCATTER,
    ScatterModel,
    level_films,
    levelled_to_views,
    warn_about,
)
from ct_pipeline.scatter_estimate import estimate_scatter

logger = logging.getLogger(__name__)

# A reconstruction (as shipped, refined) whose DRRs correlate less than this
# with its input views explains them worse than any good input did on the test
# phantoms (clean, noisy, blurred, another source distance, halo taken out:
# 0.9963 at the lowest, 2 and 8 views), while garbage, a halo left in, another
# patient's film or a pixel spacing 20 % too large mostly fall below it,
# swapped views sometimes; a mirrored film or a head score as high as good
# inputs (benchmarks/results/radiographs/ncc_threshold.md).
LOW_NCC = 0.995
# The network's own volume, before the refinement lifts every score toward 1,
# explained every good input of the test phantoms with NCC 0.9785 at the
# lowest (2 views, halo estimated and taken out; 0.9843 with 8 views): 0.975
# sits 0.0035 under it. Below it fall garbage and the 2-view model's head
# (every patient), and 3 to 8 of the 8 patients' swapped views, pixel spacing
# 20 % too large, another patient's lateral and halos left in (none with the
# 8-view model's 0.5 halo); a mirrored film, pixel spacing 20 % too small and
# the 8-view model's head stay above (the same table as LOW_NCC).
LOW_NETWORK_NCC = 0.975
# The scores of the network's own volume, beside the shipped volume's
# ``reprojection/...``.
NETWORK_SCORES = "reprojection_network"
# Each NCC predict warns on, its threshold, and what a low one says.
_WARNINGS = (
    ("reprojection/ncc", LOW_NCC, "the reconstruction explains its views poorly"),
    (
        f"{NETWORK_SCORES}/ncc",
        LOW_NETWORK_NCC,
        "the network's own volume, before the refinement, fits its views "
        "poorly: the views are likely unlike any the model was trained on",
    ),
)
# What to check when either is low, most likely first (docs/radiographs.md).
_WHAT_TO_CHECK = (
    "do not trust it without a look at the figure; check, most likely first: "
    "a scatter halo left in (let predict estimate it, or give your system's), "
    "films of two patients or two sessions, the view angles and which film is "
    "which, the pixel spacing and source distances in the tags, and that the "
    "films show a chest"
)


def reconstruct_volumes(
    drr_sets: Mapping[str, Any],
    best_model: ModelBundle,
    patient_ids: Sequence[str] | None = None,
) -> dict[str, CTVolume]:
    """HU reconstructions (true affine) of ``patient_ids`` (every DRR set when None)."""
    wanted = drr_sets if patient_ids is None else {p: drr_sets[p] for p in patient_ids}
    check_inputs(wanted, best_model)
    network = best_model.network()
    return {
        patient: reconstruct(network, best_model, drr)
        for patient, drr in iter_partitions(wanted, desc="reconstruct")
    }


def select_patients(
    drr_sets: Mapping[str, Any], best_model: ModelBundle, skip_model_patients: bool
) -> dict[str, Any]:
    """The DRR sets to reconstruct: all, without the patients the model trained
    or chose its epoch on when ``skip_model_patients`` (their scores would say
    nothing about it); the patients skipped are logged. The nodes after
    ``predict_volumes`` score and draw these only, not the earlier runs'
    patients that the predictions folder keeps."""
    known = set()
    if skip_model_patients and best_model.split is not None:
        known = set(best_model.split.get("train", ())) | set(
            best_model.split.get("val", ())
        )
    skipped = sorted(p for p in drr_sets if p in known)
    if skipped:
        logger.info(
            "predict skips %d of %d DRR sets, the model's training and validation "
            "patients (predict.skip_model_patients: false reconstructs them too)",
            len(skipped),
            len(drr_sets),
        )
    return {p: drr for p, drr in drr_sets.items() if p not in known}


def predict_volumes(
    drr_sets: Mapping[str, Any], best_model: ModelBundle
) -> dict[str, Callable[[], CTVolume]]:
    """Reconstructions of the DRR sets, each a loader reconstructed when the
    dataset writes it (Kedro's lazy saving): every file is written as soon as
    its patient is done, so an interrupted run keeps the patients it finished.
    """
    check_inputs(drr_sets, best_model)
    network = best_model.network()
    return {
        patient: partial(_reconstruct, network, best_model, drr)
        for patient, drr in drr_sets.items()
    }


def _reconstruct(network: Any, best_model: ModelBundle, drr: Any) -> CTVolume:
    return reconstruct(network, best_model, load_one(drr))


def check_inputs(drr_sets: Mapping[str, Any], best_model: ModelBundle) -> None:
    """Every DRR set checked (``inference.check_input``) before any is
    reconstructed; raises naming each file the model cannot reconstruct from."""
    problems = []
    for patient, drr in iter_partitions(drr_sets, desc="check inputs"):
        try:
            check_input(drr, best_model)
        except ValueError as error:
            problems.append(f"{partition_source(drr_sets, patient)}: {error}")
    if problems:
        raise ValueError(
            "DRR sets the model cannot reconstruct from (nothing was written):\n  - "
            + "\n  - ".join(problems)
        )


def calibrate_radiographs(
    radiographs: Mapping[str, Any],
    best_model: ModelBundle,
    mu_water_per_mm: float,
    radiograph_params: Mapping[str, Any],
) -> dict[str, DRRSet]:
    """Every patient's films (DICOM or image + sidecar) as the model's views,
    with the scatter halo taken out: estimated per patient
    (``radiographs.estimate_scatter``) or as given (``radiographs.scatter``).

    All are read and checked before anything is written or reconstructed
    (and their warnings logged, once a film): a bad file stops the run at
    once, naming itself.
    """
    given = ScatterModel(**radiograph_params["scatter"])
    estimated = radiograph_params["estimate_scatter"]
    geometry, angles = best_model.geometry, best_model.angles_deg
    calibrated = {}
    for patient, films in iter_partitions(radiographs, desc="calibrate"):
        levelled = level_films(films, geometry, angles)
        warn_about(levelled)
        # With a halo to estimate, this pass only checks every file before
        # the estimate's forward passes start: what it would keep is each
        # film at full resolution, read again below one patient at a time.
        if not estimated:
            calibrated[patient] = levelled_to_views(
                levelled, geometry, mu_water_per_mm, given
            )
    if not estimated:
        return calibrated
    network = best_model.network()
    for patient, films in iter_partitions(radiographs, desc="estimate scatter"):
        levelled = level_films(films, geometry, angles)  # warned about above
        chosen, scores = estimate_scatter(
            network, best_model, levelled, mu_water_per_mm
        )
        logger.info(
            "%s: scatter halo taken out: fraction %g, sigma %g mm "
            "(reprojection NCC %.4f; %.4f with none taken out)",
            patient,
            chosen.fraction,
            chosen.sigma_mm,
            scores[chosen],
            scores[NO_SCATTER],
        )
        calibrated[patient] = levelled_to_views(
            levelled, geometry, mu_water_per_mm, chosen
        )
    return calibrated


def score_reprojections(
    volumes: Mapping[str, Any], drr_sets: Mapping[str, Any], best_model: ModelBundle
) -> pd.DataFrame:
    """One row per patient: how well its volume explains the views it was
    reconstructed from (``reprojection_scores``), and how well the network's
    own volume (before the refinement) does (``reprojection_network/...``);
    a patient either of whose NCCs is low is warned about.

    The network's volume costs one more forward pass: ``predict_volumes``
    writes each refined volume as soon as it is made (lazy saving) and keeps
    nothing else, so the network's is made again here.
    """
    rows = []
    network = best_model.network()
    # The folder may also hold earlier runs' patients, whose views are not here.
    volumes = {p: v for p, v in volumes.items() if p in drr_sets}
    for patient, volume in iter_partitions(volumes, desc="reproject"):
        views = load_one(drr_sets[patient]).select(best_model.angles_deg)
        scores = {
            **reprojection_scores(volume, views),
            **reprojection_scores(
                network_volume(network, best_model, views), views, NETWORK_SCORES
            ),
        }
        _warn_if_low(patient, scores)
        rows.append({"patient": patient, **scores})
    return pd.DataFrame(rows, columns=None if rows else ["patient"])


def _warn_if_low(patient: str, scores: Mapping[str, float]) -> None:
    for key, threshold, meaning in _WARNINGS:
        if scores[key] < threshold:
            logger.warning(
                "%s: %s (%s %.4f < %g): %s",
                patient,
                meaning,
                key,
                scores[key],
                threshold,
                _WHAT_TO_CHECK,
            )


def radiograph_figures(
    radiographs: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    volumes: Mapping[str, Any],
    best_model: ModelBundle,
) -> dict[str, Callable[[], Figure]]:
    """One figure per patient (``evaluation.figures.radiograph_figure``): the
    films as stored, the calibrated views, the volume's reprojections and its
    slices; the picture to look at before trusting a reconstruction."""
    return _figures(drr_sets, volumes, best_model, radiographs)


def prediction_figures(
    drr_sets: Mapping[str, Any], volumes: Mapping[str, Any], best_model: ModelBundle
) -> dict[str, Callable[[], Figure]]:
    """One figure per predicted patient with views here: the input views, the
    volume's reprojections and its slices."""
    return _figures(
        drr_sets, {p: v for p, v in volumes.items() if p in drr_sets}, best_model
    )


def _figures(
    drr_sets: Mapping[str, Any],
    volumes: Mapping[str, Any],
    best_model: ModelBundle,
    radiographs: Mapping[str, Any] | None = None,
) -> dict[str, Callable[[], Figure]]:
    """A loader per patient: the figure folder's dataset draws and writes one
    patient at a time, so memory does not grow with the number of patients."""
    return {
        patient: partial(
            _figure,
            patient,
            drr_sets[patient],
            volume,
            best_model,
            radiographs[patient] if radiographs is not None else None,
        )
        for patient, volume in volumes.items()
    }


def _figure(
    patient: str, drr: Any, volume: Any, best_model: ModelBundle, films: Any
) -> Figure:
    views = load_one(drr).select(best_model.angles_deg)
    ct = load_one(volume)
    return radiograph_figure(
        load_one(films) if films is not None else [],
        views.projections,
        reproject(ct, views),
        views.angles_deg.tolist(),
        ct.hu,
        title=f"{patient}: {best_model.model}, {best_model.num_views} views",
    )


def reconstruct_request(
    drr_input: Mapping[str, Any], best_model: ModelBundle
) -> dict[str, np.ndarray]:
    """The served model's entry: one DRR set as plain arrays in, HU volume + affine out.

    ``drr_input`` = {"projections": (V, H, W), "angles_deg": (V,), "isocentre_mm": (3,)}
    (``serving.served_signature``), taken with the model's own geometry. Plain
    arrays keep ``mlflow.pyfunc`` callers free of ct_pipeline types.
    """
    missing = {"projections", "angles_deg", "isocentre_mm"} - set(drr_input)
    if missing:
        raise ValueError(
            f"drr_input lacks {sorted(missing)}; got keys {sorted(drr_input)}"
        )
    drr = DRRSet(
        projections=np.asarray(drr_input["projections"], dtype=np.float32),
        angles_deg=np.asarray(drr_input["angles_deg"], dtype=np.float64),
        geometry=best_model.geometry,
        isocentre_mm=np.asarray(drr_input["isocentre_mm"], dtype=np.float64),
    )
    volume = reconstruct(best_model.network(), best_model, drr)
    return {"hu": volume.hu, "affine": volume.affine}
