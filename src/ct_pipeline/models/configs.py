"""Named model sizes and the switches used for ablations.

tiny: unit tests (seconds on CPU at 16^3-32^3); small: the CPU demo (32^3
volume, 64 x 64 detector); medical: ~85 M parameters at 128^3 for GPUs. The
"unet_*" names are the CNN-only enhanced U-Net baseline: the same code with the
transformer parts (Swin and cross-view attention) switched off. Parameter
counts are computed (``count_parameters``), never written down by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

VIEW_FUSIONS = ("concat", "mean_max")
# The plain back-projection U-Net reference (models/backprojection_unet.py):
# not a ModelConfig, it has no switches.
BP_UNET = "bp_unet"


@dataclass(frozen=True)
class ModelConfig:
    """Per-level widths (levels 1, 1/2, 1/4, 1/8) and component switches.

    Args:
        encoder_channels: 2-D encoder widths at detector scales 1 .. 1/8.
        channels: 3-D U-Net widths at volume levels 1 .. 1/8.
        lift_channels: Widths of the lifted view features entering each level.
        cross_view_heads: Heads of the cross-view attention at 1/8 scale.
        head_dim: Channels per Swin head.
        window: Swin window side in voxels.
        swin_depth: Swin blocks per stage (plain and shifted windows).
        swin_levels: Levels whose blocks are hybrid CNN + Swin blocks.
        light_levels: Levels whose blocks are a single convolution.
        mlp_ratio: Swin MLP width over its input width.
        view_fusion: "concat" or "mean_max" (see ``models/lifting.py``).
        swin: Swin blocks on (off: the CNN-only ablation).
        cross_view: Cross-view attention on.
        residual_dense: Residual dense blocks (off: plain double convs).
        attention_gates: Attention gates on the skip connections.
        deep_supervision: Prediction heads at the coarser levels.

    Raises:
        ValueError: A width list is not 4 positive numbers, a level is not
            within 0..3, an unknown fusion, or heads that do not divide the
            encoder's last width.
    """

    encoder_channels: tuple[int, int, int, int]  # 2-D encoder, per detector scale
    channels: tuple[int, int, int, int]  # 3-D U-Net, per volume level
    lift_channels: tuple[int, int, int, int]  # lifted features entering each level
    cross_view_heads: int = 2
    head_dim: int = 16  # Swin heads = channels // head_dim
    window: int = 4
    swin_depth: int = 2  # blocks per Swin stage: plain + shifted
    # Swin hybrid blocks: middle encoder/decoder level and the bottleneck.
    swin_levels: tuple[int, ...] = (2, 3)
    # Levels whose encoder and decoder blocks are one conv: on a CPU the
    # full-resolution level costs most of a step (8x the voxels of the next).
    light_levels: tuple[int, ...] = ()
    mlp_ratio: float = 2.0
    # How lifted views are fused: "concat" (view order kept, weights tied to
    # the view count) or "mean_max" (any view count); see models/lifting.py.
    view_fusion: str = "mean_max"
    swin: bool = True
    cross_view: bool = True
    residual_dense: bool = True
    attention_gates: bool = True
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "channels", "lift_channels"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 4 or min(value) < 1:
                raise ValueError(f"{name} needs 4 positive widths, got {value}")
        for name in ("swin_levels", "light_levels"):
            levels = tuple(getattr(self, name))
            object.__setattr__(self, name, levels)
            if any(level not in range(4) for level in levels):
                raise ValueError(f"{name} must be within 0..3, got {levels}")
        if self.view_fusion not in VIEW_FUSIONS:
            raise ValueError(
                f"view_fusion must be one of {VIEW_FUSIONS}, got {self.view_fusion!r}"
            )
        if self.encoder_channels[3] % (4 * self.cross_view_heads):
            raise ValueError(
                "encoder_channels[3] must be divisible by 4 * cross_view_heads, got "
                f"{self.encoder_channels[3]} and {self.cross_view_heads}"
            )


_HYBRID: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        encoder_channels=(8, 8, 16, 16),
        channels=(8, 8, 16, 16),
        lift_channels=(4, 4, 8, 8),
        head_dim=8,
        light_levels=(0,),
    ),
    # Measured on the demo data (2 views, equal training time): concat fusion
    # and a 16-channel full-resolution level (one conv) took the hybrid from
    # 30.7 to 31.3 dB PSNR3D against 8 channels and mean/max fusion.
    "small": ModelConfig(
        encoder_channels=(8, 16, 24, 32),
        channels=(16, 16, 32, 48),
        lift_channels=(16, 8, 16, 16),
        light_levels=(0,),
        view_fusion="concat",
    ),
    "medical": ModelConfig(
        encoder_channels=(64, 128, 256, 512),
        channels=(64, 160, 352, 704),
        lift_channels=(32, 64, 128, 192),
        cross_view_heads=8,
        head_dim=32,
        mlp_ratio=4.0,
    ),
}
CONFIGS: dict[str, ModelConfig] = {
    **_HYBRID,
    **{
        f"unet_{name}": replace(cfg, swin=False, cross_view=False)
        for name, cfg in _HYBRID.items()
    },
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The named config with ``overrides`` (any ModelConfig field) applied."""
    if name not in CONFIGS:
        raise ValueError(
            f"unknown model config {name!r}, expected one of {sorted(CONFIGS)} or {BP_UNET!r}"
        )
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(
            f"unknown model overrides {sorted(unknown)}, expected some of {sorted(known)}"
        )
    return replace(CONFIGS[name], **overrides)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )
