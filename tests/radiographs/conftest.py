"""The model's views of the test phantom, rendered once per module."""

from __future__ import annotations

import numpy as np
import pytest
from films import ANGLES, MODEL, phantom

from ct_pipeline.drr.projector import render_drrs


@pytest.fixture(scope="module")
def model_views() -> np.ndarray:
    """What the model was trained on: (2, 32, 32) at 0 and 90 deg."""
    return render_drrs(phantom(), MODEL, list(ANGLES))
