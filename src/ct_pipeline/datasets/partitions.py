"""Helpers for Kedro partitioned inputs (dicts of loaders)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ct_pipeline.datasets.layers import Stored
from ct_pipeline.progress import progress
from ct_pipeline.training.data import load_one


def iter_partitions(
    partitions: Mapping[str, Any], desc: str
) -> Iterator[tuple[str, Any]]:
    """Yield (id, value) in id order, loading lazy partitions one at a time.

    Typed Any: a partition is a value or a loader of one, which a type checker
    cannot tell apart from a value that is itself callable.

    Within a run Kedro may hand a node the saved values or, after reloading,
    PartitionedDataset's loaders; both are accepted.
    """
    for key in progress(sorted(partitions), desc=desc, unit="patient"):
        yield key, load_one(partitions[key])


def training_partitions(
    volumes: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    split: Mapping[str, list[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The train and val patients' partitions, as loaders (a path each), never
    arrays: every rank reads its patients from disk as it needs them."""
    wanted = set(split["train"]) | set(split["val"])
    return (
        {k: v for k, v in volumes.items() if k in wanted},
        {k: v for k, v in drr_sets.items() if k in wanted},
    )


def load_partitions(partitions: Mapping[str, Any], desc: str) -> dict[str, Any]:
    return dict(iter_partitions(partitions, desc))


def partition_source(partitions: Mapping[str, Any], key: str) -> str:
    """Where partition ``key`` is read from, for messages: its first file (the
    project's folder datasets load each as a ``Stored`` naming its files),
    else the patient id."""
    value = partitions[key]
    if isinstance(value, Stored) and value.files:
        return str(value.files[0])
    return f"patient {key!r}"
