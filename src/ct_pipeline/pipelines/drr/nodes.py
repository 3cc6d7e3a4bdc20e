"""Nodes of the ``drr`` pipeline: thin glue over ct_pipeline.ct, .phantoms and .drr."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from matplotlib.figure import Figure

from ct_pipeline.ct import CTInputError, CTVolume, CubeGrid, preprocess_ct
from ct_pipeline.ct.io import ORIENTATION_PARAMETER, CTSource
from ct_pipeline.datasets.layers import PatientLayer
from ct_pipeline.datasets.partitions import load_one
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.anatomy import views_of_finer_anatomy
from ct_pipeline.drr.geometry import resolve_angles
from ct_pipeline.drr.preview import preview_strip
from ct_pipeline.phantoms import phantom_loaders
from ct_pipeline.pipelines.drr.manifest import build_manifest, log_changes, reusable
from ct_pipeline.pipelines.drr.workload import (
    parse_shard,
    shard_patients,
    worker_count,
)

logger = logging.getLogger(__name__)


def read_raw_cts(
    raw_ct: Mapping[str, CTSource], params: dict[str, Any]
) -> dict[str, CTSource]:
    """The raw CTs, each read with ``raw.assume_orientation`` where its file
    declares no orientation; every file that needs it and lacks it is named
    at once, before anything is read or written."""
    sources = {
        patient: replace(source, assume_orientation=params["assume_orientation"])
        for patient, source in raw_ct.items()
    }
    undeclared = sorted(str(s.path) for s in sources.values() if s.lacks_orientation())
    if undeclared:
        raise CTInputError(
            f"{len(undeclared)} NIfTI file(s) declare no orientation (qform and "
            "sform codes 0), so which way their axes point is unknown; set "
            f"{ORIENTATION_PARAMETER} (e.g. LPS or RAS) or rewrite them with "
            "their true affine; nothing was written:\n  - " + "\n  - ".join(undeclared)
        )
    return sources


def make_phantoms(
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    current_source: Mapping[str, Any] | None,
    params: dict[str, Any],
    shard: str | None = None,
    workers: int | None = 1,
) -> PatientLayer:
    """Procedural chest phantoms, only when the raw folder holds nothing.

    ``current_source`` is the ``ct_source`` record of the data set on disk
    (None before the first run): phantoms replace a data set made from real
    CTs only when ``replace_real_ct`` says so.

    Lazy, like every node of this pipeline: it returns a maker per patient,
    and the dataset computes and writes one patient at a time, so memory does
    not grow with the number of patients; ``workers`` processes make them
    side by side. A shard (``drr.shard``) makes only its part of them.
    """
    if raw_ct:
        logger.info(
            "Using %d CT(s) from the raw folder; no phantoms generated", len(raw_ct)
        )
        return PatientLayer()
    if (
        current_source
        and current_source.get("source") == "raw"
        and not params["replace_real_ct"]
    ):
        patients = list(current_source.get("patients", []))
        raise ValueError(
            f"the raw folder holds no CT, but the current data set was made from "
            f"{len(patients)} real CT(s) ({', '.join(patients[:5])}"
            f"{', ...' if len(patients) > 5 else ''}); phantoms would replace it. "
            "Put the CTs back, or set phantoms.replace_real_ct=true to replace "
            "them with phantoms; nothing was written"
        )
    logger.info("Raw folder is empty: generating %d chest phantoms", params["count"])
    loaders = _phantom_loaders(params)
    return PatientLayer(
        {p: loaders[p] for p in shard_patients(loaders, parse_shard(shard))},
        workers=worker_count(workers),
    )


def _phantom_loaders(params: Mapping[str, Any]) -> dict[str, Callable[[], CTVolume]]:
    return phantom_loaders(
        n=params["count"],
        seed=params["seed"],
        size_vox=params["size_vox"],
        spacing_mm=params["spacing_mm"],
    )


def _preprocessed(
    patient: str, ct: Callable[[], CTVolume] | CTVolume, params: dict[str, Any]
) -> CTVolume:
    prepared = preprocess_ct(
        load_one(ct),
        target_spacing_mm=params["target_spacing_mm"],
        volume_size=params["volume_size"],
        body_threshold_hu=params["body_threshold_hu"],
    )
    threshold = params["body_threshold_hu"]
    if not (prepared.hu > threshold).any():
        # All-zero DRRs would be trained on as if they showed a patient.
        raise ValueError(
            f"no body in the cube of {patient} (no voxel above "
            f"preprocess.body_threshold_hu = {threshold} HU after resampling to "
            f"{params['volume_size']} voxels of {params['target_spacing_mm']} mm): "
            "remove this CT or check its intensities and spacing; the previous "
            "preprocessed CTs are kept"
        )
    return prepared


def _sources(
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    phantom_ct: Mapping[str, Callable[[], CTVolume]],
) -> tuple[str, Mapping[str, Callable[[], CTVolume]]]:
    """Which CTs the data set is made of: the raw folder's, else the phantoms."""
    return ("raw", raw_ct) if raw_ct else ("phantom", phantom_ct)


def describe_dataset(
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    phantom_ct: Mapping[str, Callable[[], CTVolume]],
    previous: Mapping[str, Any],
    phantoms: dict[str, Any],
    preprocess: dict[str, Any],
    drr: dict[str, Any],
) -> dict[str, Any]:
    """The data set's manifest (see ``manifest.py``), logged against the previous one.

    A shard's (``drr.shard`` i/n) is the manifest of its part of the patients,
    with the shard and the list of all patients, which its merge checks.
    """
    source, volumes = _sources(raw_ct, phantom_ct)
    shard = parse_shard(drr.get("shard"))
    # A shard's phantoms are its own alone (make_phantoms): all are the recipe's.
    sharded_phantoms = source == "phantom" and shard is not None
    everyone = sorted(_phantom_loaders(phantoms) if sharded_phantoms else volumes)
    if not everyone:
        raise ValueError(
            "no CT to preprocess: the raw folder is empty and no phantoms were made"
        )
    patients = shard_patients(everyone, shard)
    if not patients:
        raise ValueError(
            f"drr.shard {shard} holds no patient: there are {len(everyone)} "
            f"patients for {shard.count if shard else 1} shards; nothing was written"
        )
    manifest = build_manifest(
        source, {p: volumes[p] for p in patients}, phantoms, preprocess, drr
    )
    if shard is None:
        log_changes(manifest, previous)
        return manifest
    logger.info("Shard %s: %d of %d patients", shard, len(patients), len(everyone))
    return manifest | {"shard": {"part": str(shard), "patients_of_all": everyone}}


def _layer(
    made: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    previous_manifest: Mapping[str, Any] | None,
    previous_layer: Mapping[str, Any] | None,
    what: str,
    workers: int | None,
) -> PatientLayer:
    """``made`` (a loader per patient) stamped with the data set's id, the
    previous files kept for the patients whose fingerprint did not change,
    the others to be made by ``workers`` processes when saved."""
    processes = worker_count(workers)
    if manifest is None:
        return PatientLayer(made, workers=processes)
    previous_layer = previous_layer or {}
    keep = reusable(manifest, previous_manifest or {}, previous_layer, what)
    return PatientLayer(
        {p: previous_layer[p] if p in keep else made[p] for p in sorted(made)},
        dataset_id=manifest["dataset_id"],
        workers=processes,
    )


def preprocess_volumes(
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    phantom_ct: Mapping[str, Callable[[], CTVolume]],
    params: dict[str, Any],
    manifest: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    previous_manifest: Mapping[str, Any] | None = None,
    workers: int | None = 1,
) -> PatientLayer:
    """Resample every CT to the isotropic cube the network sees (lazily, per
    patient, by ``workers`` processes; a patient whose fingerprint in
    ``manifest`` did not change keeps its ``previous`` cube)."""
    _, volumes = _sources(raw_ct, phantom_ct)
    # The manifest's patients: all, or a shard's.
    patients = manifest["patients"] if manifest is not None else sorted(volumes)
    made = {
        patient: partial(_preprocessed, patient, volumes[patient], params)
        for patient in patients
    }
    return _layer(made, manifest, previous_manifest, previous, "cubes", workers)


def drr_geometry(params: dict[str, Any]) -> tuple[Geometry, list[float]]:
    """The Geometry and view angles named by ``parameters_drr.yml``."""
    geometry = Geometry.from_dict(params["geometry"])
    return geometry, resolve_angles(params.get("num_views"), params.get("angles_deg"))


def _rendered(
    cube: Callable[[], CTVolume] | CTVolume,
    source: Callable[[], CTVolume] | CTVolume,
    geometry: Geometry,
    angles: list[float],
    params: dict[str, Any],
) -> DRRSet:
    return views_of_finer_anatomy(
        load_one(source),
        CubeGrid.of(load_one(cube)),
        geometry,
        angles,
        params["mu_water_per_mm"],
        int(params["view_oversample"]),
        mirrored=True,
        device=_render_device(),
    )


def _render_device() -> str:
    # On a GPU machine the renderer runs on the GPU (the same code, tested on CPU).
    return "cuda" if torch.cuda.is_available() else "cpu"


def render_drr_sets(
    preprocessed_ct: Mapping[str, Callable[[], CTVolume]],
    raw_ct: Mapping[str, Callable[[], CTVolume]],
    phantom_ct: Mapping[str, Callable[[], CTVolume]],
    params: dict[str, Any],
    manifest: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    previous_manifest: Mapping[str, Any] | None = None,
) -> PatientLayer:
    """Cone-beam (or parallel) line-integral DRRs of every patient (lazily,
    per patient), rendered from the patient's CT ``drr.view_oversample`` times
    finer than the preprocessed cube, and of the patient mirrored left-right.
    A patient whose fingerprint did not change keeps its ``previous`` views."""
    # Resolved once, here: a bad geometry fails before any patient is read.
    geometry, angles = drr_geometry(params)
    _, sources = _sources(raw_ct, phantom_ct)
    made = {
        patient: partial(
            _rendered,
            preprocessed_ct[patient],
            sources[patient],
            geometry,
            angles,
            params,
        )
        for patient in preprocessed_ct
    }
    # One GPU is shared best by one process rendering patient after patient.
    workers = 1 if _render_device() == "cuda" else params.get("workers")
    return _layer(made, manifest, previous_manifest, previous, "DRR sets", workers)


def _preview(patient: str, drr: Callable[[], DRRSet] | DRRSet) -> Figure:
    views = load_one(drr)
    return preview_strip(views.projections, views.angles_deg.tolist(), title=patient)


def make_drr_previews(
    drr_sets: Mapping[str, Callable[[], DRRSet]],
    manifest: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    previous_manifest: Mapping[str, Any] | None = None,
    workers: int | None = 1,
) -> PatientLayer:
    """Radiograph-like strips of every patient's views, for people to look at:
    a figure each, made when the catalogue's figure dataset writes it."""
    made = {
        patient: partial(_preview, patient, drr_sets[patient]) for patient in drr_sets
    }
    return _layer(made, manifest, previous_manifest, previous, "previews", workers)
