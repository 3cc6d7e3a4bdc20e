"""The hybrid CNN-ViT reconstructor: views -> 2-D encoder -> cross-view
attention -> geometric lifting at 4 scales -> 3-D (Swin) U-Net -> volume."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models.backprojection_unet import BackprojectionUNet
from ct_pipeline.models.configs import (
    BP_UNET,
    ModelConfig,
    count_parameters,
    get_config,
)
from ct_pipeline.models.cross_view import CrossViewAttention
from ct_pipeline.models.encoder2d import LINE_INTEGRAL_SCALE, XrayEncoder2d
from ct_pipeline.models.lifting import GeometricLifting, check_views
from ct_pipeline.models.output import ModelOutput, unit_range
from ct_pipeline.models.swin3d import WindowAttention3d
from ct_pipeline.models.unet3d import LEVELS, UNet3d

logger = logging.getLogger(__name__)


class ReconstructionNet(nn.Module):
    """``model(views (B, V, H, W), angles_deg (V,))`` -> {"volume", "deep", "attention"}.

    "volume" is (B, 1, n, n, n) in [0, 1] on ``grid``, the cube of n^3 voxels
    centred on the isocentre (RAS+, the preprocessed CT grid); "deep" the
    coarser predictions at n/2, n/4, n/8 (empty without deep supervision);
    "attention" the attention weights when asked for, else None.
    """

    def __init__(
        self,
        config: ModelConfig,
        geometry: Geometry,
        grid: CubeGrid,
        num_views: int | None = None,
    ) -> None:
        super().__init__()
        if config.view_fusion == "concat" and num_views is None:
            raise ValueError("view_fusion 'concat' needs num_views, got None")
        if grid.size % 2 ** (LEVELS - 1):
            raise ValueError(
                f"the grid's size must be a positive multiple of 8, got {grid.size}"
            )
        self.config, self.geometry, self.grid = config, geometry, grid
        enc = config.encoder_channels
        self.encoder = XrayEncoder2d(enc)
        self.cross_view = (
            CrossViewAttention(enc[3], config.cross_view_heads)
            if config.cross_view
            else None
        )
        # Level 0 also lifts the normalised raw projection: a plain back-projection channel.
        lift_in = (enc[0] + 1, *enc[1:])
        # Level l's cube: the same extent and centre at 2^l times the spacing.
        self.lifts = nn.ModuleList(
            GeometricLifting(
                geometry,
                grid.coarsened(2**level),
                lift_in[level],
                config.lift_channels[level],
                num_views if config.view_fusion == "concat" else None,
            )
            for level in range(LEVELS)
        )
        self.unet = UNet3d(config, grid.size)

    def forward(
        self,
        views: torch.Tensor,
        angles_deg: torch.Tensor,
        return_attention: bool = False,
    ) -> ModelOutput:
        check_views(views, self.geometry)
        b, v, h, w = views.shape
        if angles_deg.shape != (v,):
            raise ValueError(
                f"expected angles_deg of shape ({v},), got {tuple(angles_deg.shape)}"
            )
        attention_modules = self._attention_modules()
        for module in attention_modules.values():
            module.record = return_attention
        features = [
            f.view(b, v, *f.shape[1:])
            for f in self.encoder(views.reshape(b * v, 1, h, w))
        ]
        features[0] = torch.cat(
            [features[0], views[:, :, None] / LINE_INTEGRAL_SCALE], dim=2
        )
        if self.cross_view is not None:
            features[3] = self.cross_view(features[3], angles_deg)
        lifted = [
            lift(f, angles_deg) for lift, f in zip(self.lifts, features, strict=True)
        ]
        logits, coarse = self.unet(lifted)
        attention = None
        if return_attention:
            attention = {name: m.last_weights for name, m in attention_modules.items()}
            for module in attention_modules.values():
                module.record, module.last_weights = False, None
        return {
            "volume": unit_range(logits),
            "deep": [unit_range(c) for c in coarse],
            "attention": attention,
        }

    def _attention_modules(
        self,
    ) -> dict[str, CrossViewAttention | WindowAttention3d]:
        return {
            name: m
            for name, m in self.named_modules()
            if isinstance(m, (CrossViewAttention, WindowAttention3d))
        }


def build_model(
    name: str,
    geometry: Geometry,
    grid: CubeGrid,
    num_views: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """The named network for ``num_views`` views.

    Args:
        name: A hybrid config ("tiny", "small", "medical", or its CNN-only
            ablation "unet_tiny", "unet_small", "unet_medical"), or the plain
            reference "bp_unet".
        geometry: The detector and source the views come from; the lifting
            traces its rays.
        grid: The output cube, centred on the isocentre (``ORIGIN_MM``); its
            size a multiple of 8 for the hybrid, of 4 for bp_unet.
        num_views: Views per sample; needed by the configs whose weights are
            tied to it (view_fusion "concat", bp_unet).
        **overrides: Any ``ModelConfig`` field, e.g. ``swin=False`` for an
            ablation (none for bp_unet).

    Raises:
        ValueError: An unknown name or field, a bad value, a grid off the
            isocentre, or bp_unet with overrides or without ``num_views``.
    """
    model: nn.Module
    if name == BP_UNET:
        if overrides:
            raise ValueError(f"{BP_UNET} takes no model overrides, got {overrides}")
        if num_views is None:
            raise ValueError(f"{BP_UNET} needs num_views, got None")
        model = BackprojectionUNet(geometry, grid, num_views)
    else:
        model = ReconstructionNet(
            get_config(name, **overrides), geometry, grid, num_views
        )
    logger.info(
        "built model %s (%s) with %d parameters",
        name,
        overrides or "defaults",
        count_parameters(model),
    )
    return model
