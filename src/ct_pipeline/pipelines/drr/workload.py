"""How the drr stage divides its patients: worker processes and shards."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable


def worker_count(workers: object) -> int:
    """``drr.workers`` as a number of processes: null is one per core."""
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(
            "drr.workers: expected a whole number >= 1 or null (one per CPU "
            f"core), got {workers!r}"
        )
    return workers


def parse_shard(shard: object) -> tuple[int, int] | None:
    """``drr.shard`` "i/n" (1-based) as (i, n); null is no shard."""
    if shard is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(
            f"drr.shard: expected 'i/n' with 1 <= i <= n (e.g. 3/16) or null, "
            f"got {shard!r}"
        )
    return int(match[1]), int(match[2])


def shard_patients(patients: Iterable[str], shard: object) -> list[str]:
    """The patients shard "i/n" renders: those whose index in the sorted list
    is i - 1 modulo n (every patient where ``shard`` is null)."""
    ordered = sorted(patients)
    parsed = parse_shard(shard)
    if parsed is None:
        return ordered
    i, n = parsed
    return [p for index, p in enumerate(ordered) if index % n == i - 1]
