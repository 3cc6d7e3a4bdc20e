"""The DRR set of one patient: the data contract between rendering and training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.drr.physics import MU_WATER_PER_MM


@dataclass(frozen=True)
class DRRSet:
    """Line-integral projections of one CT with everything needed to reuse them.

    ``projections`` is (V, H, W) float32, p = integral of mu dl (dimensionless),
    rows superior -> inferior and columns along u = d x v.
    ``isocentre_mm`` is the RAS+ point the views rotate about (the centre of
    the preprocessed volume).
    """

    projections: np.ndarray  # (V, H, W) float32
    angles_deg: np.ndarray  # (V,) float64
    geometry: Geometry
    isocentre_mm: np.ndarray  # (3,) float64
    # The HU -> mu scale the views were rendered with: training re-renders
    # moved patients (augmentation) with the same physics.
    mu_water_per_mm: float = MU_WATER_PER_MM

    def __post_init__(self) -> None:
        views = self.projections.shape[0] if self.projections.ndim == 3 else None
        if views is None or self.projections.shape[1:] != self.geometry.detector_px:
            raise ValueError(
                f"projections must be (V, {self.geometry.detector_px[0]}, "
                f"{self.geometry.detector_px[1]}), got {self.projections.shape}"
            )
        if self.angles_deg.shape != (views,):
            raise ValueError(f"need {views} angles, got shape {self.angles_deg.shape}")

    def select(self, angles_deg: Sequence[float]) -> DRRSet:
        """The subset of views at ``angles_deg`` (each must have been rendered)."""
        index = []
        for angle in angles_deg:
            hits = np.flatnonzero(np.isclose(self.angles_deg, angle, atol=1e-6))
            if hits.size == 0:
                raise ValueError(
                    f"view {angle} deg was not rendered; available: {self.angles_deg.tolist()}"
                )
            index.append(int(hits[0]))
        return DRRSet(
            self.projections[index],
            self.angles_deg[index],
            self.geometry,
            self.isocentre_mm,
            self.mu_water_per_mm,
        )
