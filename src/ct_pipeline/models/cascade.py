"""Coarse-to-fine reconstruction: a network trained on a coarser grid, frozen,
its volume upsampled and corrected at the finer grid by a small network.

A reconstructor's convolutions learn features of its voxel size: carried to a
grid of half the spacing, each kernel spans half the millimetres and the
network computes another function (measured at 64^3: validation fell from
25.0 to 19.3 dB at such a switch and did not recover in the fine epochs a CPU
affords). Here the coarse network is kept as it is, so the fine stage starts
from the coarse volume upsampled, and its correction learns only what the
finer grid adds: edges sharper than the coarse voxels, and what the views'
finer pixels show of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models.blocks import ConvBlock3d, ConvNormAct3d, Pointwise3d
from ct_pipeline.models.encoder2d import LINE_INTEGRAL_SCALE
from ct_pipeline.models.lifting import GeometricLifting, check_views
from ct_pipeline.models.output import ModelOutput, unit_range

# Channels of the correction U-Net's levels (full, half, quarter resolution):
# few at the full grid, where a 3x3x3 convolution costs 8 times a level
# below (at 64^3 an epoch of 28 samples took ~25 s on one CPU core, the
# whole network at that grid 95 s).
CORRECTION_CHANNELS = (8, 16, 32)
# Channels of the full-resolution views lifted onto the fine grid.
LIFT_CHANNELS = 8

BaseFactory = Callable[[Geometry, CubeGrid], nn.Module]


class CorrectionUNet(nn.Module):
    """(B, C_in, n, n, n) -> (B, 1, n, n, n), n a multiple of 4; exactly 0 at
    initialisation (zero head), so a fine stage starts at its coarse volume."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        full, half, quarter = CORRECTION_CHANNELS
        self.stem = ConvNormAct3d(in_channels, full)
        self.down1 = nn.Sequential(
            nn.Conv3d(full, half, 2, stride=2), ConvBlock3d(half, half)
        )
        self.down2 = nn.Sequential(
            nn.Conv3d(half, quarter, 2, stride=2), ConvBlock3d(quarter, quarter)
        )
        self.up2 = nn.ConvTranspose3d(quarter, half, 2, stride=2)
        self.merge2 = ConvNormAct3d(2 * half, half)
        self.up1 = nn.ConvTranspose3d(half, full, 2, stride=2)
        self.merge1 = ConvNormAct3d(2 * full, full)
        self.head = Pointwise3d(full, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(cast(torch.Tensor, self.head.bias))

    def blocks(self) -> list[nn.Module]:
        """The convolution blocks, whose activations activation checkpointing
        recomputes (``models/memory.py``)."""
        return [self.stem, self.down1, self.down2, self.merge2, self.merge1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        y = self.merge2(torch.cat([self.up2(s2), s1], dim=1))
        y = self.merge1(torch.cat([self.up1(y), s0], dim=1))
        return self.head(y)


class FineStage(nn.Module):
    """``model(views (B, V, H, W), angles_deg (V,))`` -> the network output on
    ``grid``, from ``coarse``, a network for ``grid`` coarsened ``factor``
    times and the detector binned as many times.

    The coarse network is frozen (its weights take no gradient, it runs in
    eval mode and without autograd) and reconstructs from the views averaged
    over ``factor`` x ``factor`` pixels; its volume is upsampled trilinearly
    and a ``CorrectionUNet`` adds what it computes from that volume and from
    the full-resolution views lifted onto ``grid``. "deep" is empty: the
    coarse heads belong to the frozen network and teach the correction
    nothing.
    """

    def __init__(
        self,
        coarse: nn.Module,
        factor: int,
        geometry: Geometry,
        grid: CubeGrid,
        num_views: int | None,
    ) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"a fine stage's factor must be >= 2, got {factor}")
        if grid.size % 4:
            raise ValueError(
                f"a fine stage's grid size must be a multiple of 4, got {grid.size}"
            )
        self.factor, self.geometry, self.grid = factor, geometry, grid
        self.coarse = coarse.requires_grad_(False)
        self.lift = GeometricLifting(geometry, grid, 1, LIFT_CHANNELS, num_views)
        self.correction = CorrectionUNet(1 + LIFT_CHANNELS)

    def train(self, mode: bool = True) -> FineStage:
        super().train(mode)
        self.coarse.eval()
        return self

    def forward(
        self,
        views: torch.Tensor,
        angles_deg: torch.Tensor,
        return_attention: bool = False,
    ) -> ModelOutput:
        check_views(views, self.geometry)
        with torch.no_grad():
            coarse = self.coarse(
                F.avg_pool2d(views, self.factor), angles_deg, return_attention
            )
            upsampled = F.interpolate(
                coarse["volume"].float(),
                scale_factor=self.factor,
                mode="trilinear",
                align_corners=False,
            )
        lifted = self.lift(views[:, :, None] / LINE_INTEGRAL_SCALE, angles_deg)
        correction = self.correction(torch.cat([upsampled, lifted], dim=1))
        attention = coarse["attention"]
        return {
            "volume": unit_range(upsampled + correction),
            "deep": [],
            # Named as this module names them, so that they are looked up here.
            "attention": None
            if attention is None
            else {f"coarse.{name}": a for name, a in attention.items()},
        }


def check_chained(bins: Sequence[int]) -> None:
    """Raises unless each bin is a multiple of the next: a stage upsamples the
    one before by a whole factor."""
    if any(coarse % fine for coarse, fine in zip(bins, bins[1:], strict=False)):
        raise ValueError(
            f"each stage's bin must be a multiple of the next one's (a stage "
            f"upsamples the one before by a whole factor), got {list(bins)}"
        )


def build_cascade(
    base: BaseFactory,
    geometry: Geometry,
    grid: CubeGrid,
    bins: Sequence[int],
    num_views: int | None,
) -> nn.Module:
    """The network for ``grid`` and ``geometry`` after stages of ``bins``
    (coarse to fine, ending at 1; e.g. (4, 2, 1)): ``base`` built for the
    first stage's grid and detector, then a ``FineStage`` per later stage.
    ``bins == (1,)``: ``base`` at ``grid`` itself."""
    if not bins or bins[-1] != 1:
        raise ValueError(f"stage bins must end at 1, got {list(bins)}")
    check_chained(bins)
    model = base(geometry.binned(bins[0]), grid.coarsened(bins[0]))
    for coarse, fine in zip(bins, bins[1:], strict=False):
        model = FineStage(
            model,
            coarse // fine,
            geometry.binned(fine),
            grid.coarsened(fine),
            num_views,
        )
    return model
