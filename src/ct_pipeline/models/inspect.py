"""Attention inspection: the weights of one forward pass (figures: evaluation/figures.py)."""

from __future__ import annotations

import torch
from torch import nn


def attention_maps(
    model: nn.Module, views: torch.Tensor, angles_deg: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Module name -> attention weights of one no-grad forward pass.

    Cross-view: (B, heads, V*h*w, V*h*w); Swin: (B * windows, heads, N, N).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = model(views, angles_deg, return_attention=True)["attention"]
    finally:
        model.train(was_training)
    return dict(maps or {})
