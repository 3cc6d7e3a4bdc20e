"""3-D U-Net over the lifted view features (4 levels: 1, 1/2, 1/4, 1/8).

Lifted features enter at every encoder level (back-projection-like evidence at
every resolution); residual dense blocks, attention-gated skips, Swin hybrid
blocks at the chosen levels and a prediction head per level for deep
supervision; "light" levels (the CPU configs' full resolution) use one conv. With swin off the same code is the CNN-only "enhanced U-Net".
"""

from __future__ import annotations

import torch
from torch import nn

from ct_pipeline.models.blocks import (
    AttentionGate3d,
    ConvNormAct3d,
    Pointwise3d,
    conv_block,
)
from ct_pipeline.models.configs import ModelConfig
from ct_pipeline.models.swin3d import HybridBlock3d

LEVELS = 4


class UNet3d(nn.Module):
    """lifted: 4 maps (B, L_l, n / 2^l, ...) -> logits (B, 1, n, n, n) + coarse logits."""

    def __init__(self, config: ModelConfig, volume_size: int) -> None:
        super().__init__()
        c, lift, cfg = config.channels, config.lift_channels, config
        sizes = [volume_size // 2**level for level in range(LEVELS)]

        def block(level: int, c_in: int) -> nn.Module:
            if level in cfg.light_levels:
                return ConvNormAct3d(c_in, c[level])
            growth = max(4, c[level] // 2)
            if cfg.swin and level in cfg.swin_levels:
                return HybridBlock3d(
                    c_in,
                    c[level],
                    (sizes[level],) * 3,
                    residual_dense=cfg.residual_dense,
                    growth=growth,
                    heads=max(1, c[level] // cfg.head_dim),
                    window=cfg.window,
                    depth=cfg.swin_depth,
                    mlp_ratio=cfg.mlp_ratio,
                )
            return conv_block(c_in, c[level], cfg.residual_dense, growth)

        self.encoders = nn.ModuleList(
            block(level, lift[level] + (c[level - 1] if level else 0))
            for level in range(LEVELS)
        )
        self.downs = nn.ModuleList(
            nn.Conv3d(c[lv], c[lv], 2, stride=2) for lv in range(LEVELS - 1)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(c[lv + 1], c[lv], 2, stride=2)
            for lv in range(LEVELS - 1)
        )
        self.gates = nn.ModuleList(
            AttentionGate3d(c[lv], c[lv], max(4, c[lv] // 2))
            if cfg.attention_gates
            else nn.Identity()
            for lv in range(LEVELS - 1)
        )
        self.decoders = nn.ModuleList(block(lv, 2 * c[lv]) for lv in range(LEVELS - 1))
        head_levels = range(LEVELS) if cfg.deep_supervision else range(1)
        self.heads = nn.ModuleList(Pointwise3d(c[lv], 1) for lv in head_levels)

    def forward(
        self, lifted: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.encoders[0](lifted[0])
        for level in range(1, LEVELS):
            skips.append(x)
            x = self.encoders[level](
                torch.cat([self.downs[level - 1](x), lifted[level]], dim=1)
            )
        decoded = [x]  # level 3 (bottleneck) first
        for level in reversed(range(LEVELS - 1)):
            up = self.ups[level](x)
            skip = skips[level]
            if not isinstance(self.gates[level], nn.Identity):
                skip = self.gates[level](skip, up)
            x = self.decoders[level](torch.cat([up, skip], dim=1))
            decoded.append(x)
        decoded = decoded[::-1]  # level 0 first
        logits = [head(decoded[level]) for level, head in enumerate(self.heads)]
        return logits[0], logits[1:]
