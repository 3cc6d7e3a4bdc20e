"""Nodes of the ``drr`` pipeline: thin glue over ct_pipeline.ct, .phantoms and .drr."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ct_pipeline.ct import CTVolume, preprocess_ct
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.geometry import resolve_angles
from ct_pipeline.drr.preview import preview_png_bytes
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.phantoms import generate_phantoms
from ct_pipeline.pipelines.partitions import iter_partitions

logger = logging.getLogger(__name__)


def make_phantoms(
    raw_ct: Mapping[str, Callable[[], CTVolume]], params: dict[str, Any]
) -> dict[str, CTVolume]:
    """Procedural chest phantoms, only when the raw folder holds no CT."""
    if raw_ct:
        logger.info(
            "Using %d CT(s) from the raw folder; no phantoms generated", len(raw_ct)
        )
        return {}
    logger.info("Raw folder is empty: generating %d chest phantoms", params["count"])
    return generate_phantoms(
        n=params["count"],
        seed=params["seed"],
        size_vox=params["size_vox"],
        spacing_mm=params["spacing_mm"],
    )


def preprocess_volumes(
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    phantom_ct: Mapping[str, Callable[[], CTVolume]],
    params: dict[str, Any],
) -> tuple[dict[str, CTVolume], dict[str, Any]]:
    """Resample every CT to the isotropic cube the network sees."""
    source = "raw" if raw_ct else "phantom"
    volumes = raw_ct if raw_ct else phantom_ct
    if not volumes:
        raise ValueError(
            "no CT to preprocess: the raw folder is empty and no phantoms were made"
        )
    prepared = {
        patient: preprocess_ct(
            ct,
            target_spacing_mm=params["target_spacing_mm"],
            volume_size=params["volume_size"],
            body_threshold_hu=params["body_threshold_hu"],
        )
        for patient, ct in iter_partitions(volumes, desc="preprocess CT")
    }
    threshold = params["body_threshold_hu"]
    empty = [p for p, ct in prepared.items() if not (ct.hu > threshold).any()]
    if empty:
        # All-zero DRRs would be trained on as if they showed a patient.
        raise ValueError(
            f"no body in the cube of {empty} (no voxel above "
            f"preprocess.body_threshold_hu = {threshold} HU after resampling to "
            f"{params['volume_size']} voxels of {params['target_spacing_mm']} mm): "
            "remove these CTs or check their intensities and spacing"
        )
    return prepared, {"source": source, "patients": sorted(prepared)}


def drr_geometry(params: dict[str, Any]) -> tuple[Geometry, list[float]]:
    """The Geometry and view angles named by ``parameters_drr.yml``."""
    geometry = Geometry.from_dict(params["geometry"])
    return geometry, resolve_angles(params.get("num_views"), params.get("angles_deg"))


def render_drr_sets(
    preprocessed_ct: Mapping[str, Callable[[], CTVolume]], params: dict[str, Any]
) -> dict[str, DRRSet]:
    """Cone-beam (or parallel) line-integral DRRs of every patient."""
    geometry, angles = drr_geometry(params)
    drr_sets = {}
    for patient, ct in iter_partitions(preprocessed_ct, desc="render DRRs"):
        projections = render_drrs(
            ct, geometry, angles, mu_water_per_mm=params["mu_water_per_mm"]
        )
        drr_sets[patient] = DRRSet(
            projections=projections,
            angles_deg=np.asarray(angles, dtype=np.float64),
            geometry=geometry,
            isocentre_mm=ct.centre_mm,
            mu_water_per_mm=float(params["mu_water_per_mm"]),
        )
    return drr_sets


def make_drr_previews(drr_sets: Mapping[str, Callable[[], DRRSet]]) -> dict[str, bytes]:
    """Radiograph-like PNG strips of every patient's views, for people to look at."""
    return {
        patient: preview_png_bytes(
            drr.projections, drr.angles_deg.tolist(), title=patient
        )
        for patient, drr in iter_partitions(drr_sets, desc="DRR previews")
    }
