"""Nodes of the ``predict`` pipeline and of the MLflow-logged inference pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ct_pipeline.ct import CTVolume
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.inference import ModelBundle, reconstruct, views_from_films
from ct_pipeline.pipelines.partitions import iter_partitions


def reconstruct_volumes(
    drr_sets: Mapping[str, Any],
    best_model: ModelBundle,
    patient_ids: Sequence[str] | None = None,
) -> dict[str, CTVolume]:
    """HU reconstructions (true affine) of ``patient_ids`` (every DRR set when None)."""
    network = best_model.network()
    wanted = drr_sets if patient_ids is None else {p: drr_sets[p] for p in patient_ids}
    return {
        patient: reconstruct(network, best_model, drr)
        for patient, drr in iter_partitions(wanted, desc="reconstruct")
    }


def reconstruct_radiographs(
    radiographs: Mapping[str, Any], best_model: ModelBundle, mu_water_per_mm: float
) -> dict[str, CTVolume]:
    """HU reconstructions of every patient's films (DICOM or image + sidecar)."""
    # Every patient's films are read and calibrated before the first (slow)
    # reconstruction: a bad file stops the run at once, and nothing is written.
    views = {
        patient: views_from_films(best_model, films, mu_water_per_mm)
        for patient, films in iter_partitions(radiographs, desc="calibrate")
    }
    network = best_model.network()
    return {
        patient: reconstruct(network, best_model, drr)
        for patient, drr in iter_partitions(views, desc="reconstruct")
    }


def reconstruct_request(
    drr_input: Mapping[str, Any], best_model: ModelBundle
) -> dict[str, np.ndarray]:
    """The served model's entry: one DRR set as plain arrays in, HU volume + affine out.

    ``drr_input`` = {"projections": (V, H, W), "angles_deg": (V,), "isocentre_mm": (3,)},
    optionally "geometry" (a Geometry dict; the model's own by default). Plain
    arrays keep ``mlflow.pyfunc`` callers free of ct_pipeline types.
    """
    missing = {"projections", "angles_deg", "isocentre_mm"} - set(drr_input)
    if missing:
        raise ValueError(
            f"drr_input lacks {sorted(missing)}; got keys {sorted(drr_input)}"
        )
    geometry = drr_input.get("geometry") or best_model.geometry.to_dict()
    drr = DRRSet(
        projections=np.asarray(drr_input["projections"], dtype=np.float32),
        angles_deg=np.asarray(drr_input["angles_deg"], dtype=np.float64),
        geometry=Geometry.from_dict(geometry),
        isocentre_mm=np.asarray(drr_input["isocentre_mm"], dtype=np.float64),
    )
    volume = reconstruct(best_model.network(), best_model, drr)
    return {"hu": volume.hu, "affine": volume.affine}
