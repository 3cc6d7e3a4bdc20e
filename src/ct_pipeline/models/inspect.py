"""Attention inspection: the weights of one forward pass, and a figure of them."""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure
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


def plot_attention(maps: dict[str, torch.Tensor], max_panels: int = 6) -> Figure:
    """One panel per attention module: head-averaged weights of its first batch
    item / window (query tokens down, key tokens across)."""
    if not maps:
        raise ValueError("plot_attention needs at least one attention map, got none")
    names = list(maps)[:max_panels]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4 * cols, 3.6 * rows))
    for index, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, index + 1)
        image = ax.imshow(
            maps[name][0].float().mean(dim=0).cpu().numpy(), cmap="viridis"
        )
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
