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
    the preprocessed volume). ``anatomy_spacing_mm`` is the voxel size of the
    volume the views were rendered from: finer than the target cube, as a
    real radiograph sees finer anatomy than the grid (None: the cube itself).
    ``mirrored_projections``, when present, are the same views of the patient
    mirrored left-right about the isocentre, rendered from that same volume:
    the exact views of a mirrored sample in training.
    """

    projections: np.ndarray  # (V, H, W) float32
    angles_deg: np.ndarray  # (V,) float64
    geometry: Geometry
    isocentre_mm: np.ndarray  # (3,) float64
    # The HU -> mu scale the views were rendered with: training re-renders
    # moved patients (augmentation) with the same physics.
    mu_water_per_mm: float = MU_WATER_PER_MM
    anatomy_spacing_mm: float | None = None
    mirrored_projections: np.ndarray | None = None

    def __post_init__(self) -> None:
        views = self.projections.shape[0] if self.projections.ndim == 3 else None
        if views is None or self.projections.shape[1:] != self.geometry.detector_px:
            raise ValueError(
                f"projections must be (V, {self.geometry.detector_px[0]}, "
                f"{self.geometry.detector_px[1]}), got {self.projections.shape}"
            )
        mirrored = self.mirrored_projections
        if mirrored is not None and mirrored.shape != self.projections.shape:
            raise ValueError(
                f"mirrored_projections must match projections {self.projections.shape}, "
                f"got {mirrored.shape}"
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
        mirrored = self.mirrored_projections
        return DRRSet(
            self.projections[index],
            self.angles_deg[index],
            self.geometry,
            self.isocentre_mm,
            self.mu_water_per_mm,
            self.anatomy_spacing_mm,
            None if mirrored is None else mirrored[index],
        )
