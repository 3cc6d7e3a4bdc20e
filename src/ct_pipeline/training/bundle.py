"""The bundle of a finished training: its best weights with what rebuilds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ct_pipeline.inference import ModelBundle, Refinement
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.job import TrainResult
from ct_pipeline.training.resolution import schedule_stages


def trained_bundle(
    result: TrainResult,
    config: TrainConfig,
    refinement: Refinement,
    split: Mapping[str, Sequence[str]],
    trained_in_run: str | None = None,
    dataset_id: str | None = None,
) -> ModelBundle:
    """The best weights of ``result``, labelled with what they were trained
    for and on (the grid, the patient ids of each part of ``split``), and the
    refinement that follows the network when they reconstruct."""
    return ModelBundle(
        state_dict=result.best_state_dict,
        model=config.model,
        model_overrides=config.model_overrides,
        geometry=result.geometry,
        grid=result.grid,
        angles_deg=tuple(config.angles),
        hu_window=config.hu_window,
        trained_in_run=trained_in_run,
        refinement=refinement,
        dataset_id=dataset_id,
        split={part: tuple(ids) for part, ids in split.items()},
        stage_bins=tuple(
            stage.bin
            for stage in schedule_stages(config.resolution_schedule, config.epochs)
        ),
    )
