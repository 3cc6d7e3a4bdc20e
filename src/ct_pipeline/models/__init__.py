"""Reconstruction networks: the hybrid CNN-ViT, its ablations and the CNN-only
U-Net baseline. ``build_model(name, geometry, grid, num_views, **overrides)``;
``build_cascade`` chains one over the stages of a resolution schedule."""

from ct_pipeline.models.cascade import build_cascade
from ct_pipeline.models.configs import (
    CONFIGS,
    ModelConfig,
    count_parameters,
    get_config,
)
from ct_pipeline.models.hybrid import ReconstructionNet, build_model
from ct_pipeline.models.inspect import attention_maps
from ct_pipeline.models.output import ModelOutput

__all__ = [
    "CONFIGS",
    "ModelConfig",
    "ModelOutput",
    "ReconstructionNet",
    "attention_maps",
    "build_cascade",
    "build_model",
    "count_parameters",
    "get_config",
]
