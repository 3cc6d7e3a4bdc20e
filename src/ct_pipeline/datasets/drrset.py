"""Kedro dataset for one patient's DRR set (projections + angles + geometry)."""

from __future__ import annotations

import json
from typing import Any

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
                    # Sets written before these were recorded: views of the cube.
                    anatomy_spacing_mm=_optional_float(data, "anatomy_spacing_mm"),
                    mirrored_projections=(
                        data["mirrored_projections"].astype(np.float32)
                        if "mirrored_projections" in data
                        else None
                    ),
                )
        except (OSError, KeyError, ValueError) as error:
            raise DatasetError(
                f"cannot read DRR set {self._filepath}: {error}"
            ) from error

    def save(self, data: DRRSet) -> None:
        optional: dict[str, Any] = {}
        if data.anatomy_spacing_mm is not None:
            optional["anatomy_spacing_mm"] = np.float64(data.anatomy_spacing_mm)
        if data.mirrored_projections is not None:
            optional["mirrored_projections"] = data.mirrored_projections.astype(
                np.float32
            )
        arrays = optional | {
            "projections": data.projections.astype(np.float32),
            "angles_deg": np.asarray(data.angles_deg, dtype=np.float64),
            "geometry": np.array(json.dumps(data.geometry.to_dict())),
            "isocentre_mm": np.asarray(data.isocentre_mm, dtype=np.float64),
            "mu_water_per_mm": np.float64(data.mu_water_per_mm),
        }
        with atomic_path(self._filepath) as tmp:
            np.savez_compressed(tmp, **arrays)


def _optional_float(data: np.lib.npyio.NpzFile, key: str) -> float | None:
    return float(data[key]) if key in data else None
