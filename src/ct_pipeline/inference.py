"""Reconstruct CT volumes from DRR sets with a trained model; no ground truth needed.

A trained model travels as a ``ModelBundle``: weights, model name and
overrides, imaging geometry, cube grid, views and HU window. On disk it is a
dict of plain types and tensors, so it loads with
``torch.load(weights_only=True)`` and rebuilds the exact network that was
trained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ct_pipeline.atomic import atomic_path
from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.metrics import to_hu
from ct_pipeline.models import build_model, count_parameters


@dataclass(frozen=True)
class ModelBundle:
    """Trained weights with everything that rebuilds and labels them.

    ``grid`` is the cube the network predicts, centred on the isocentre (a
    prediction moves it to its DRR set's isocentre). ``trained_in_run`` is the
    tracking run that trained the weights, if any: runs that score or use the
    bundle later are tagged with it.
    """

    state_dict: Mapping[str, torch.Tensor]
    model: str
    model_overrides: Mapping[str, Any]
    geometry: Geometry
    grid: CubeGrid
    angles_deg: tuple[float, ...]
    hu_window: tuple[float, float]
    trained_in_run: str | None = None

    @property
    def num_views(self) -> int:
        return len(self.angles_deg)

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.network())

    def network(self) -> nn.Module:
        """The trained network, in eval mode on the CPU."""
        network = build_model(
            self.model,
            self.geometry,
            self.grid.size,
            self.grid.spacing_mm,
            self.num_views,
            **self.model_overrides,
        )
        network.load_state_dict(self.state_dict)
        return network.eval()

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors: loads with ``torch.load(weights_only=True)``."""
        return {
            "state_dict": dict(self.state_dict),
            "model": self.model,
            "model_overrides": dict(self.model_overrides),
            "geometry": self.geometry.to_dict(),
            "volume_size": self.grid.size,
            "spacing_mm": self.grid.spacing_mm,
            "angles_deg": list(self.angles_deg),
            "hu_window": list(self.hu_window),
            "trained_in_run": self.trained_in_run,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Written atomically: a crash mid-write leaves the previous file whole."""
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelBundle:
        """Read with ``weights_only=True``: a file from elsewhere cannot run code."""
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelBundle:
        low, high = data["hu_window"]
        return cls(
            state_dict=dict(data["state_dict"]),
            model=str(data["model"]),
            model_overrides=dict(data["model_overrides"]),
            geometry=Geometry.from_dict(data["geometry"]),
            grid=CubeGrid(int(data["volume_size"]), float(data["spacing_mm"])),
            angles_deg=tuple(float(a) for a in data["angles_deg"]),
            hu_window=(float(low), float(high)),
            trained_in_run=data.get("trained_in_run"),
        )


@torch.no_grad()
def reconstruct(network: nn.Module, bundle: ModelBundle, drr_set: DRRSet) -> CTVolume:
    """The HU volume (RAS+, true affine) reconstructed from the views the model knows.

    ``network`` is ``bundle.network()``, built once by a caller that
    reconstructs many patients.
    """
    if drr_set.geometry != bundle.geometry:
        raise ValueError(
            f"DRR set geometry {drr_set.geometry} differs from the model's {bundle.geometry}"
        )
    views = drr_set.select(bundle.angles_deg)
    output = network(
        torch.from_numpy(views.projections)[None],
        torch.as_tensor(views.angles_deg, dtype=torch.float32),
    )
    unit = output["volume"][0, 0].float().numpy()
    # The preprocessed CT's grid is centred on the isocentre by construction,
    # so a prediction overlays its ground truth.
    return CTVolume(
        hu=to_hu(unit, bundle.hu_window).astype(np.float32),
        affine=bundle.grid.centred(drr_set.isocentre_mm).affine,
    )
