"""The study's variants: what each changes of the base training config."""

from __future__ import annotations

from ct_pipeline.evaluation.study import component_variants
from ct_pipeline.training import TrainConfig


def test_the_resolution_row_trains_the_same_epochs_coarse_first():
    (variant,) = component_variants("tiny", 2, ["coarse_to_fine"])
    config = variant.config(TrainConfig(epochs=80), 1, "ckpt")
    assert config.epochs == 80
    assert config.resolution_schedule == [
        {"bin": 2, "epochs": 60},
        {"bin": 1, "epochs": 20},
    ]
    (full,) = component_variants("tiny", 2, ["full"])
    assert full.config(TrainConfig(epochs=80), 1, "ckpt").resolution_schedule is None
