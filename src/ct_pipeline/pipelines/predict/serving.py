"""What the MLflow-logged model says about itself: the signature of
``reconstruct_request`` for one trained model, and an input example."""

from __future__ import annotations

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from ct_pipeline.drr import DRRSet
from ct_pipeline.inference import ModelBundle


def served_input(drr: DRRSet, best_model: ModelBundle) -> dict[str, np.ndarray]:
    """``drr``'s views of ``best_model`` as the served model takes them."""
    views = drr.select(best_model.angles_deg)
    return {
        "projections": views.projections,
        "angles_deg": views.angles_deg,
        "isocentre_mm": views.isocentre_mm,
    }


def served_signature(best_model: ModelBundle) -> ModelSignature:
    """Named arrays in, the HU volume on the model's grid and its affine out.
    Any number of views (those the model takes are picked by angle) of the
    model's detector size. MLflow checks inputs against it: a wrong shape or
    dtype is refused, naming the expected one."""
    rows, columns = best_model.geometry.detector_px
    size = best_model.grid.size
    return ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, rows, columns), "projections"),
                TensorSpec(np.dtype(np.float64), (-1,), "angles_deg"),
                TensorSpec(np.dtype(np.float64), (3,), "isocentre_mm"),
            ]
        ),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (size, size, size), "hu"),
                TensorSpec(np.dtype(np.float64), (4, 4), "affine"),
            ]
        ),
    )
