"""Evaluation library: baselines, per-patient tables and figures.

Knows nothing about Kedro or MLflow: nodes call these functions and the
catalogue decides where tables and figures go.
"""

from ct_pipeline.evaluation.baseline import mean_volume
from ct_pipeline.evaluation.figures import (
    orthogonal_slices,
    slices_figure,
    training_curves_figure,
)
from ct_pipeline.evaluation.report import per_patient_table, summary

__all__ = [
    "mean_volume",
    "orthogonal_slices",
    "per_patient_table",
    "slices_figure",
    "summary",
    "training_curves_figure",
]
