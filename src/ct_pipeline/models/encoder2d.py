"""Multi-scale 2-D X-ray encoder, shared by all views.

Input: raw DRR line integrals p (dimensionless). They are divided by the fixed
``LINE_INTEGRAL_SCALE`` (10: the line integral of 500 mm of water at
mu_water = 0.02 / mm), which keeps typical body projections in [0, ~2]
without data-dependent statistics, so any view count and any patient are
normalised the same way.
"""

from __future__ import annotations

import torch
from torch import nn

LINE_INTEGRAL_SCALE = 10.0


def _norm2d(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(next(g for g in (8, 4, 2, 1) if channels % g == 0), channels)


class ResBlock2d(nn.Module):
    """Two 3x3 convs with a residual, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm2d(channels),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class XrayEncoder2d(nn.Module):
    """Features at scales 1, 1/2, 1/4, 1/8 of the detector, one list per call.

    Each stride-2 conv halves the grid exactly, so feature pixel j at scale
    1/2^s covers detector pixels [j 2^s, (j + 1) 2^s): the lifting relies on
    this to sample every scale with the same normalised detector coordinates.
    """

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"XrayEncoder2d expects 4 channel counts, got {channels}")
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
            _norm2d(channels[0]),
            nn.GELU(),
        )
        self.stages = nn.ModuleList([ResBlock2d(channels[0])])
        self.downs = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            self.downs.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                    _norm2d(c_out),
                    nn.GELU(),
                )
            )
            self.stages.append(ResBlock2d(c_out))

    def forward(self, views: torch.Tensor) -> list[torch.Tensor]:
        """views (N, 1, H, W) raw line integrals -> 4 maps (N, C_s, H / 2^s, W / 2^s)."""
        h, w = views.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"detector size must be divisible by 8, got {(h, w)}")
        x = self.stages[0](self.stem(views / LINE_INTEGRAL_SCALE))
        features = [x]
        for down, stage in zip(self.downs, self.stages[1:], strict=True):
            x = stage(down(x))
            features.append(x)
        return features
