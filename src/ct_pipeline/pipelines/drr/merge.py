"""``kedro run --pipelines drr_merge``: the parts of sharded ``drr`` runs made one data set.

Each sharded run (``drr.shard`` i/n) wrote its patients' files and manifest as
part ``i-of-n`` beside each layer. The merge checks every part before it
returns anything, so a refused merge writes nothing: all n parts present and
of one sharding, made with the same parameters from the same list of
patients, each holding exactly its shard's patients, every layer's part
stamped with its part's manifest. The merged layers link the parts' files
(nothing is made again) and are committed together, like a ``drr`` run's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ct_pipeline.datasets.layers import PatientLayer, layer_id
from ct_pipeline.pipelines.drr.manifest import assemble_manifest, log_changes
from ct_pipeline.pipelines.drr.workload import Shard, shard_of_part, shard_patients

# What every part's manifest must share with the others.
SHARED_KEYS = ("source", "format_version", "parameters")


class ShardsRefused(ValueError):
    """The parts cannot make one data set; the message says why and what to run."""


def _refuse(problem: str) -> ShardsRefused:
    return ShardsRefused(
        f"cannot merge the drr shards: {problem}; nothing was written. Run the "
        "missing or stale shards again (`kedro run --pipelines drr --params "
        "drr.shard=i/n`), or delete the *.parts folders and shard anew"
    )


def _sharding(manifests: Mapping[str, Any]) -> dict[Shard, Mapping[str, Any]]:
    """The parts by shard: all n of one sharding, or refused."""
    if not manifests:
        raise _refuse(
            "no parts found (data/03_primary/ct_source.parts is empty or missing)"
        )
    shards = {name: shard_of_part(name) for name in manifests}
    strange = sorted(name for name, shard in shards.items() if shard is None)
    if strange:
        raise _refuse(f"parts not named i-of-n: {', '.join(strange)}")
    counts = sorted({shard.count for shard in shards.values() if shard})
    if len(counts) > 1:
        raise _refuse(f"parts of {len(counts)} shardings (n = {counts})")
    count = counts[0]
    present = {shard.index for shard in shards.values() if shard}
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in present]
    if missing:
        raise _refuse(f"shard(s) {', '.join(missing)} missing")
    return {shard: manifests[name] for name, shard in shards.items() if shard}


def _check_agreement(parts: Mapping[Shard, Mapping[str, Any]]) -> None:
    """Refused unless the parts agree and each holds its share of the patients."""
    first_shard = min(parts)
    first = parts[first_shard]
    everyone = first.get("shard", {}).get("patients_of_all")
    for shard, manifest in sorted(parts.items()):
        recorded = manifest.get("shard", {})
        if recorded.get("part") != str(shard):
            raise _refuse(f"part {shard.name}'s manifest is not shard {shard}'s")
        for key in SHARED_KEYS:
            if manifest.get(key) != first.get(key):
                raise _refuse(
                    f"shards {first_shard} and {shard} disagree on their {key}"
                )
        if recorded.get("patients_of_all") != everyone:
            raise _refuse(
                f"shards {first_shard} and {shard} were run on different lists "
                "of patients (the raw folder or phantoms.count changed between them)"
            )
        if manifest.get("patients") != shard_patients(everyone, shard):
            raise _refuse(f"shard {shard} does not hold its share of the patients")


def _merged_layer(
    parts: Mapping[str, Mapping[str, Any]],
    manifests: Mapping[Shard, Mapping[str, Any]],
    what: str,
    dataset_id: str | None,
) -> PatientLayer:
    """One layer of the merged data set: every part's files, checked to be
    the whole part its manifest records (a shard killed in its commit is not)."""
    merged = PatientLayer(dataset_id=dataset_id)
    for shard, manifest in sorted(manifests.items()):
        part = parts.get(shard.name)
        if part is None:
            raise _refuse(f"shard {shard} wrote no {what}")
        stamped = dataset_id is None or layer_id(part) == manifest["dataset_id"]
        if not stamped or sorted(part) != manifest["patients"]:
            raise _refuse(f"shard {shard}'s {what} are not those of its manifest")
        merged.update(part)
    return merged


def merge_shards(
    manifest_parts: Mapping[str, Mapping[str, Any]],
    phantom_parts: Mapping[str, Mapping[str, Any]],
    cube_parts: Mapping[str, Mapping[str, Any]],
    view_parts: Mapping[str, Mapping[str, Any]],
    preview_parts: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, Any],
) -> tuple[dict[str, Any], PatientLayer, PatientLayer, PatientLayer, PatientLayer]:
    """The manifest, phantoms, cubes, DRR sets and previews of the data set
    the parts make: the same as one unsharded run's, file for file."""
    parts = _sharding(manifest_parts)
    _check_agreement(parts)
    first = parts[min(parts)]
    manifest = assemble_manifest(
        first["source"],
        first["parameters"],
        {p: f for m in parts.values() for p, f in m["fingerprints"].items()},
        {p: i for m in parts.values() for p, i in m["inputs"].items()},
    )
    dataset_id = manifest["dataset_id"]
    phantoms = (
        _merged_layer(phantom_parts, parts, "phantoms", None)
        if manifest["source"] == "phantom"
        else PatientLayer()
    )
    layers = (
        _merged_layer(cube_parts, parts, "cubes", dataset_id),
        _merged_layer(view_parts, parts, "DRR sets", dataset_id),
        _merged_layer(preview_parts, parts, "previews", dataset_id),
    )
    log_changes(manifest, previous)
    return (manifest, phantoms, *layers)
