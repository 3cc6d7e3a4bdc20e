"""What a training is given and what it gives back: the contracts of one run.

``TrainJob`` travels to every rank (pickled for spawned workers), ``Place``
says where a rank runs, ``TrainResult`` comes back from rank 0 and carries the
grid and geometry the weights were trained for, so the bundle that labels
them is made from the result alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.training.config import ADVERSARIAL, TrainConfig
from ct_pipeline.training.sink import MetricSink

ModelFactory = Callable[[TrainConfig, Geometry, CubeGrid], nn.Module]
LossFactory = Callable[[TrainConfig], nn.Module]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; every rank raises it at the same step."""


def build_model_from_config(
    config: TrainConfig, geometry: Geometry, grid: CubeGrid
) -> nn.Module:
    from ct_pipeline.models import build_model

    return build_model(
        config.model,
        geometry,
        grid,
        len(config.angles),
        **config.model_overrides,
    )


def build_loss_from_config(config: TrainConfig) -> nn.Module:
    from ct_pipeline.losses import ReconstructionLoss

    extra = {} if config.perceptual is None else {"perceptual": config.perceptual}
    # The adversarial term is the Adversary's (training/adversarial.py), not this loss's.
    weights = {k: v for k, v in (config.loss_weights or {}).items() if k != ADVERSARIAL}
    return ReconstructionLoss(weights=weights, **extra)


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs; picklable, so a spawned worker can be handed it.

    ``volumes`` and ``drr_sets`` map patient ids to loaders (or, in tests and
    in-process studies, values): a rank reads a patient when it needs it.
    """

    volumes: Mapping[str, Any]
    drr_sets: Mapping[str, Any]
    split: dict[str, list[str]]
    config: TrainConfig
    sink: MetricSink | None = None
    model_factory: ModelFactory = build_model_from_config
    loss_factory: LossFactory = build_loss_from_config
    # The data set's id (the drr stage's manifest): part of the checkpoint's
    # identity, so weights are never reused for other data under the same ids.
    dataset_id: str | None = None


@dataclass(frozen=True)
class Place:
    """Where one rank runs: its global rank, how many ranks there are, its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and talks to the sink."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class TrainResult:
    """What rank 0 hands back: the best weights, what they were trained for,
    the per-epoch history and where the checkpoints are."""

    best_state_dict: dict[str, torch.Tensor]
    grid: CubeGrid
    geometry: Geometry
    history: list[dict[str, float]]
    best_val_psnr: float
    best_epoch: int
    checkpoint_paths: dict[str, Path]
    start_epoch: int = 1
    # Largest |w_rank - w_rank0| over all weights at the end: 0 when DDP kept ranks in step.
    max_rank_weight_diff: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        """Plain types and tensors (a spawned rank 0 saves it for its parent)."""
        payload = dict(self.__dict__)
        payload["grid"] = self.grid.to_dict()
        payload["geometry"] = self.geometry.to_dict()
        payload["checkpoint_paths"] = {
            k: str(v) for k, v in self.checkpoint_paths.items()
        }
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainResult:
        data = dict(payload)
        data["grid"] = CubeGrid.from_dict(data["grid"])
        data["geometry"] = Geometry.from_dict(data["geometry"])
        data["checkpoint_paths"] = {
            k: Path(v) for k, v in data["checkpoint_paths"].items()
        }
        return cls(**data)
