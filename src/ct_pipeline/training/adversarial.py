"""The optional adversarial term: a least-squares PatchGAN critic (LSGAN, Mao et al. 2017).

``loss_weights.adversarial`` > 0 builds an ``Adversary``; at 0 (the default)
nothing of it exists, so training is exactly the six-term loss. The two
networks never touch each other's gradients:

- ``generator_loss`` scores the generator's volume with the critic's weights
  frozen and outside the critic's DDP wrapper, so the critic collects no
  gradient and no all-reduce of it starts; the gradient flows into the
  generator only.
- ``discriminator_step`` sees the generator's volume detached, so it cannot
  reach the generator's weights; it steps the critic's own optimiser, its
  gradients all-reduced by its own DDP wrapper when distributed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models.discriminator import PatchDiscriminator3d
from ct_pipeline.training.config import ADVERSARIAL, TrainConfig
from ct_pipeline.training.job import Place

# pix2pix / X2CT-GAN's critic optimiser: Adam, beta1 0.5.
BETAS = (0.5, 0.999)


def adversarial_weight(config: TrainConfig) -> float:
    weight = float((config.loss_weights or {}).get(ADVERSARIAL, 0.0))
    if weight < 0:
        raise ValueError(f"train.loss_weights.adversarial must be >= 0, got {weight}")
    return weight


def build_critic(geometry: Geometry, grid: CubeGrid) -> nn.Module:
    """The critic for views of ``geometry`` and volumes on ``grid``, on the
    default device: the one trained, and the one the resolution schedule's
    stages are checked with."""
    return PatchDiscriminator3d(geometry, grid)


class Adversary:
    """The critic, its optimiser and the two halves of the LSGAN game."""

    def __init__(
        self,
        weight: float,
        geometry: Geometry,
        grid: CubeGrid,
        lr: float,
        place: Place,
    ) -> None:
        self.weight = weight
        self.module = build_critic(geometry, grid).to(place.device)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=lr, betas=BETAS)
        self.critic: nn.Module = self.module
        if place.distributed:
            cuda = place.device.type == "cuda"
            self.critic = DistributedDataParallel(
                self.module, device_ids=[place.device.index] if cuda else None
            )

    def generator_loss(
        self, volume: torch.Tensor, views: torch.Tensor, angles: torch.Tensor
    ) -> torch.Tensor:
        """Unweighted LSGAN generator loss: mean (D(G(x)) - 1)^2."""
        self.module.requires_grad_(False)
        try:
            score = self.module(volume, views, angles)
        finally:
            self.module.requires_grad_(True)
        return ((score.float() - 1) ** 2).mean()

    def discriminator_step(
        self,
        volume: torch.Tensor,
        target: torch.Tensor,
        views: torch.Tensor,
        angles: torch.Tensor,
    ) -> torch.Tensor:
        """One critic update: mean (D(real) - 1)^2 / 2 + D(fake)^2 / 2; returns that loss."""
        real = self.critic(target, views, angles).float()
        fake = self.critic(volume.detach(), views, angles).float()
        loss = 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {
                k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()
            },
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def build_adversary(
    config: TrainConfig, geometry: Geometry, grid: CubeGrid, place: Place
) -> Adversary | None:
    """The adversary of ``config``, or None when its weight is 0."""
    weight = adversarial_weight(config)
    if weight == 0:
        return None
    return Adversary(weight, geometry, grid, config.lr, place)
