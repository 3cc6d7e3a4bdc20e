"""The bundle of a finished training: its best weights with what rebuilds them."""

from __future__ import annotations

from typing import Any

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.inference import make_bundle
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.worker import TrainResult


def run_name(model: str, num_views: int) -> str:
    """What a tracking run of this model is called: ``small-2v``."""
    return f"{model}-{num_views}v"


def trained_bundle(
    result: TrainResult,
    config: TrainConfig,
    volume: CTVolume,
    geometry: Geometry,
    trained_in_run: str | None = None,
) -> dict[str, Any]:
    """``volume`` is any training CT (all share the grid), ``geometry`` their views'."""
    return make_bundle(
        result.best_state_dict,
        model=config.model,
        model_overrides=config.model_overrides,
        geometry=geometry,
        volume_size=volume.hu.shape[0],
        spacing_mm=float(volume.spacing_mm[0]),
        angles_deg=config.angles,
        hu_window=config.hu_window,
        trained_in_run=trained_in_run,
    )
