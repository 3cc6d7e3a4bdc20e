"""The data set's manifest: what made each patient's files, and one id for all.

A patient's fingerprint covers everything its cube, views and preview depend
on: its raw files' content (or, for phantoms, their parameters and seed), the
preprocessing and DRR parameters and ``FORMAT_VERSION``. A rerun reuses the
files of every patient whose fingerprint is unchanged and renders the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ct_pipeline.ct.io import CTSource
from ct_pipeline.datasets.layers import Stored, layer_id
from ct_pipeline.datasets.partitions import load_one

logger = logging.getLogger(__name__)

# Bump when the renderer, the preprocessing or a file format changes what a
# patient's files hold for the same inputs: every patient is then rendered again.
FORMAT_VERSION = 1

# Files above this size are fingerprinted by size, mtime and a sample of
# their bytes (a full hash of hundreds of GB of CT would dominate a rerun).
FULL_HASH_MAX_BYTES = 64 * 2**20
SAMPLE_BYTES = 2**20
SAMPLES = 8

# drr parameters that decide how the stage runs, not what a patient's files
# hold: changing them re-renders nothing.
RUN_ONLY_KEYS = frozenset({"workers", "shard"})


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_fingerprint(path: Path) -> dict[str, Any]:
    """The content hash of a file, or size + mtime + sampled hash of a large one."""
    size = path.stat().st_size
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_MAX_BYTES:
            for block in iter(lambda: handle.read(SAMPLE_BYTES), b""):
                sha.update(block)
            return {"sha256": sha.hexdigest()}
        for k in range(SAMPLES):
            handle.seek((size - SAMPLE_BYTES) * k // (SAMPLES - 1))
            sha.update(handle.read(SAMPLE_BYTES))
    return {
        "size": size,
        "mtime_ns": path.stat().st_mtime_ns,
        "sampled_sha256": sha.hexdigest(),
    }


def _raw_fingerprint(loader: Any) -> Any:
    """A raw CT's files' fingerprints; a CT handed over in memory (a notebook,
    a test) is fingerprinted by its voxels and affine."""
    if isinstance(loader, CTSource):
        # The orientation assumed for a file that declares none shapes the CT.
        files = {path.name: file_fingerprint(path) for path in loader.files}
        return files | {"assume_orientation": loader.assume_orientation}
    if isinstance(loader, Stored):
        return {path.name: file_fingerprint(path) for path in loader.files}
    volume = load_one(loader)
    sha = hashlib.sha256(np.ascontiguousarray(volume.hu).tobytes())
    sha.update(np.asarray(volume.affine, dtype=np.float64).tobytes())
    return {"voxels_sha256": sha.hexdigest()}


def build_manifest(
    source: str,
    volumes: Mapping[str, Any],
    phantoms: Mapping[str, Any],
    preprocess: Mapping[str, Any],
    drr: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of the data set made of ``volumes`` ("raw" or "phantom")."""
    drr = {k: v for k, v in drr.items() if k not in RUN_ONLY_KEYS}
    made_by = {"format_version": FORMAT_VERSION, "preprocess": preprocess, "drr": drr}
    if source == "phantom":
        # Phantom i is made from seed + i: the count changes which exist, not them.
        recipe = {k: v for k, v in phantoms.items() if k != "count"}
        inputs = {patient: {"phantom": recipe} for patient in volumes}
    else:
        inputs = {patient: _raw_fingerprint(volumes[patient]) for patient in volumes}
    fingerprints = {
        patient: _digest({"patient": patient, "input": inputs[patient]} | made_by)
        for patient in sorted(volumes)
    }
    parameters = {"preprocess": preprocess, "drr": drr} | (
        {"phantoms": phantoms} if source == "phantom" else {}
    )
    return assemble_manifest(source, parameters, fingerprints, inputs)


def assemble_manifest(
    source: str,
    parameters: Mapping[str, Any],
    fingerprints: Mapping[str, str],
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of patients with these fingerprints and inputs; its id is
    that of the fingerprints alone, so the same patients made in one run or
    in shards merged afterwards are the same data set."""
    return {
        "dataset_id": _digest(sorted(fingerprints.items()))[:16],
        "source": source,
        "patients": sorted(fingerprints),
        "format_version": FORMAT_VERSION,
        "parameters": dict(parameters),
        "fingerprints": dict(sorted(fingerprints.items())),
        "inputs": dict(sorted(inputs.items())),
    }


def log_changes(manifest: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
    """ "3 new, 1 changed, 196 unchanged, 2 removed" against the previous data set."""
    new, old = manifest["fingerprints"], previous.get("fingerprints", {})
    counts = {
        "new": sum(p not in old for p in new),
        "changed": sum(p in old and old[p] != f for p, f in new.items()),
        "unchanged": sum(old.get(p) == f for p, f in new.items()),
        "removed": sum(p not in new for p in old),
    }
    logger.info(
        "Data set %s: %s",
        manifest["dataset_id"],
        ", ".join(f"{n} {what}" for what, n in counts.items()),
    )


def reusable(
    manifest: Mapping[str, Any],
    previous: Mapping[str, Any],
    previous_layer: Mapping[str, Any],
    what: str,
) -> set[str]:
    """The patients whose files in ``previous_layer`` this data set can keep:
    fingerprint unchanged, and the layer is the previous manifest's."""
    if not previous_layer or not previous:
        return set()
    if layer_id(previous_layer) != previous.get("dataset_id"):
        logger.warning(
            "The previous %s belong to data set %s, the manifest to %s: every "
            "patient's %s is made again",
            what,
            layer_id(previous_layer),
            previous.get("dataset_id"),
            what,
        )
        return set()
    old = previous.get("fingerprints", {})
    return {
        patient
        for patient, fingerprint in manifest["fingerprints"].items()
        if old.get(patient) == fingerprint and patient in previous_layer
    }
