"""Seeded patient-level split: no patient is ever in two splits."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def split_patients(
    patient_ids: Iterable[str], fractions: Mapping[str, float], seed: int
) -> dict[str, list[str]]:
    """Assign every patient id to exactly one of train / val / test.

    The ids are sorted before the seeded shuffle, so the split depends on the
    set of ids and the seed only, not on the order files were discovered in.
    val and test get round(fraction * n) patients (half up), train the rest;
    each split's list is sorted.
    """
    ids = sorted(str(p) for p in patient_ids)
    if len(set(ids)) != len(ids):
        duplicates = sorted({p for p in ids if ids.count(p) > 1})
        raise ValueError(f"patient ids must be unique, got duplicates {duplicates}")
    if set(fractions) != set(SPLIT_NAMES):
        raise ValueError(
            f"fractions must have keys {list(SPLIT_NAMES)}, got {sorted(fractions)}"
        )
    if any(f < 0 for f in fractions.values()) or not math.isclose(
        sum(fractions.values()), 1.0, abs_tol=1e-6
    ):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {dict(fractions)}")

    n = len(ids)
    counts = {name: math.floor(fractions[name] * n + 0.5) for name in ("val", "test")}
    counts["train"] = n - counts["val"] - counts["test"]
    for name in SPLIT_NAMES:
        if counts[name] <= 0:
            raise ValueError(
                f"split {name!r} would be empty: {n} patients x fraction "
                f"{fractions[name]} gives {counts[name]}; add patients or raise its fraction"
            )

    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    n_train, n_val = counts["train"], counts["val"]
    parts = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {name: sorted(parts[name]) for name in SPLIT_NAMES}
