"""Kedro dataset for one patient's DRR set (projections + angles + geometry)."""

from __future__ import annotations

import json

import numpy as np
from kedro.io import DatasetError

from ct_pipeline.atomic import atomic_path
from ct_pipeline.datasets.base import LocalFileDataset
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.physics import MU_WATER_PER_MM


class DRRSetDataset(LocalFileDataset[DRRSet, DRRSet]):
    """A DRRSet as one ``.npz``: arrays plus the geometry as JSON, written atomically."""

    def load(self) -> DRRSet:
        try:
            with np.load(self._filepath, allow_pickle=False) as data:
                return DRRSet(
                    projections=data["projections"].astype(np.float32),
                    angles_deg=data["angles_deg"].astype(np.float64),
                    geometry=Geometry.from_dict(json.loads(str(data["geometry"]))),
                    isocentre_mm=data["isocentre_mm"].astype(np.float64),
                    # Sets written before it was recorded used the default.
                    mu_water_per_mm=float(data.get("mu_water_per_mm", MU_WATER_PER_MM)),
                )
        except (OSError, KeyError, ValueError) as error:
            raise DatasetError(
                f"cannot read DRR set {self._filepath}: {error}"
            ) from error

    def save(self, data: DRRSet) -> None:
        with atomic_path(self._filepath) as tmp:
            np.savez_compressed(
                tmp,
                projections=data.projections.astype(np.float32),
                angles_deg=np.asarray(data.angles_deg, dtype=np.float64),
                geometry=np.array(json.dumps(data.geometry.to_dict())),
                isocentre_mm=np.asarray(data.isocentre_mm, dtype=np.float64),
                mu_water_per_mm=np.float64(data.mu_water_per_mm),
            )
