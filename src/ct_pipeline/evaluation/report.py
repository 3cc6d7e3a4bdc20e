"""Per-patient metric tables and their summary, ready for a report or MLflow."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def per_patient_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per patient (index ``patient_id``, sorted), one column per metric.

    Every patient must carry the same metrics: a missing value would silently
    shift the means that ``summary`` reports.
    """
    if not rows:
        raise ValueError("per_patient_table needs at least one patient, got none")
    names = None
    for patient, metrics in rows.items():
        if names is None:
            names = list(metrics)
        elif set(metrics) != set(names):
            raise ValueError(
                f"patient {patient!r} has metrics {sorted(metrics)}, expected {sorted(names)}"
            )
    table = pd.DataFrame.from_dict(
        {patient: dict(metrics) for patient, metrics in rows.items()}, orient="index"
    )
    table = table[names].sort_index().astype(float)
    table.index.name = "patient_id"
    return table


def summary(table: pd.DataFrame, prefix: str = "test") -> dict[str, float]:
    """Mean of each metric over patients, keyed ``<prefix>/<metric>``
    (e.g. ``test/psnr_3d``), the names logged to MLflow."""
    if table.empty:
        raise ValueError("summary needs a non-empty table")
    return {f"{prefix}/{name}": float(value) for name, value in table.mean().items()}
