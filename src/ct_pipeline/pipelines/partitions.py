"""Helpers for Kedro partitioned inputs (dicts of loaders)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def iter_partitions(
    partitions: Mapping[str, T | Callable[[], T]], desc: str
) -> Iterator[tuple[str, T]]:
    """Yield (id, value) in id order, loading lazy partitions one at a time.

    Within a run Kedro may hand a node the saved values or, after reloading,
    PartitionedDataset's loaders; both are accepted.
    """
    for key in tqdm(sorted(partitions), desc=desc, unit="patient"):
        yield key, load_one(partitions[key])


def load_partitions(
    partitions: Mapping[str, T | Callable[[], T]], desc: str
) -> dict[str, T]:
    return dict(iter_partitions(partitions, desc))


def load_one(value: T | Callable[[], T]) -> T:
    """One partition, loaded if it is still lazy."""
    return value() if callable(value) else value
