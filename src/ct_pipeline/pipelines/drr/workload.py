"""How the drr stage divides its patients: worker processes and shards."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass


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


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @property
    def name(self) -> str:
        """The name of the shard's part of each layer, e.g. ``3-of-16``."""
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_NAME = re.compile(r"(\d+)-of-(\d+)")


def parse_shard(shard: object) -> Shard | None:
    """``drr.shard`` "i/n" (1-based) as a Shard; null is no shard."""
    if shard is None:
        return None
    match = _SPEC.fullmatch(shard) if isinstance(shard, str) else None
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(
            "drr.shard: expected 'i/n' with 1 <= i <= n (e.g. 3/16) or null, "
            f"got {shard!r}"
        )
    return Shard(int(match[1]), int(match[2]))


def shard_of_part(name: str) -> Shard | None:
    """The shard whose part is called ``name`` ("3-of-16"); None for another name."""
    match = _NAME.fullmatch(name)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        return None
    return Shard(int(match[1]), int(match[2]))


def shard_patients(patients: Iterable[str], shard: Shard | None) -> list[str]:
    """The patients shard i/n makes: those whose index in the sorted list is
    i - 1 modulo n (every patient where ``shard`` is None). Round robin, so
    shards differ by one patient at most, and a patient's shard depends only
    on the sorted list of all patients, the same in every shard's run."""
    ordered = sorted(patients)
    if shard is None:
        return ordered
    return ordered[shard.index - 1 :: shard.count]
