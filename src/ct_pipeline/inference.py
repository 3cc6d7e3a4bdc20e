"""Reconstruct CT volumes from DRR sets with a trained model; no ground truth needed.

A trained model travels as a *bundle*: a dict of plain types and tensors
(weights, model name and overrides, imaging geometry, volume grid, views and
HU window), so it loads with ``torch.load(weights_only=True)`` and rebuilds
the exact network that was trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ct_pipeline.ct import CTVolume
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.metrics import to_hu
from ct_pipeline.models import build_model


def make_bundle(
    state_dict: Mapping[str, torch.Tensor],
    model: str,
    model_overrides: Mapping[str, Any],
    geometry: Geometry,
    volume_size: int,
    spacing_mm: float,
    angles_deg: Sequence[float],
    hu_window: Sequence[float],
    trained_in_run: str | None = None,
) -> dict[str, Any]:
    """The weights with everything that rebuilds and labels them.

    ``trained_in_run`` is the tracking run that trained them, if any: runs that
    score or use the bundle later are tagged with it.
    """
    return {
        "state_dict": dict(state_dict),
        "model": model,
        "model_overrides": dict(model_overrides),
        "geometry": geometry.to_dict(),
        "volume_size": int(volume_size),
        "spacing_mm": float(spacing_mm),
        "angles_deg": [float(a) for a in angles_deg],
        "hu_window": [float(v) for v in hu_window],
        "trained_in_run": trained_in_run,
    }


def load_bundle(bundle: Mapping[str, Any]) -> nn.Module:
    """The trained network of ``bundle``, in eval mode on the CPU."""
    network = build_model(
        bundle["model"],
        Geometry.from_dict(bundle["geometry"]),
        bundle["volume_size"],
        bundle["spacing_mm"],
        len(bundle["angles_deg"]),
        **bundle["model_overrides"],
    )
    network.load_state_dict(bundle["state_dict"])
    return network.eval()


def volume_affine(
    isocentre_mm: np.ndarray, volume_size: int, spacing_mm: float
) -> np.ndarray:
    """RAS+ affine of the cube the network predicts: centred on the isocentre.

    Equals the preprocessed CT's affine, whose centre is the isocentre by
    construction, so a prediction overlays its ground truth.
    """
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = (
        np.asarray(isocentre_mm, dtype=np.float64) - (volume_size - 1) / 2 * spacing_mm
    )
    return affine


@torch.no_grad()
def reconstruct(
    network: nn.Module, bundle: Mapping[str, Any], drr_set: DRRSet
) -> CTVolume:
    """The HU volume (RAS+, true affine) reconstructed from the views the model knows."""
    geometry = Geometry.from_dict(bundle["geometry"])
    if drr_set.geometry != geometry:
        raise ValueError(
            f"DRR set geometry {drr_set.geometry} differs from the model's {geometry}"
        )
    views = drr_set.select(bundle["angles_deg"])
    output = network(
        torch.from_numpy(views.projections)[None],
        torch.as_tensor(views.angles_deg, dtype=torch.float32),
    )
    unit = output["volume"][0, 0].float().numpy()
    return CTVolume(
        hu=to_hu(unit, bundle["hu_window"]).astype(np.float32),
        affine=volume_affine(
            drr_set.isocentre_mm, bundle["volume_size"], bundle["spacing_mm"]
        ),
    )
