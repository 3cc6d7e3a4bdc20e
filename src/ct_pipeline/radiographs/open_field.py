"""The open field: where the beam reaches the detector through air alone."""

from __future__ import annotations

import numpy as np

# Share of a film's pixels taken as its open field (direct exposure): a chest
# film leaves air beside the body or above the shoulders on far more than 1 %.
OPEN_FIELD_FRACTION = 0.01


def open_field_level(log_i: np.ndarray, fraction: float = OPEN_FIELD_FRACTION) -> float:
    """ln I0: the mean of the brightest ``fraction`` of pixels (direct exposure)."""
    flat = np.ravel(log_i)
    count = max(1, round(fraction * flat.size))
    # A partial sort: a film of millions of pixels is levelled once per halo tried.
    return float(np.partition(flat, flat.size - count)[-count:].mean())
