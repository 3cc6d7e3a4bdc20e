"""Attention inspection returns the weights of one forward pass and plots them."""

from __future__ import annotations

import torch

from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.evaluation.figures import plot_attention
from ct_pipeline.models import attention_maps, build_model


def test_attention_maps_and_plot() -> None:
    torch.manual_seed(0)
    geometry = Geometry(detector_px=(32, 32), pixel_mm=12.0)
    model = build_model("tiny", geometry, 32, 12.0)
    maps = attention_maps(
        model, torch.rand(1, 2, 32, 32) * 5, torch.tensor([0.0, 90.0])
    )
    assert maps["cross_view"].shape == (1, 2, 2 * 16, 2 * 16)  # 1/8 of 32 = 4x4 tokens
    swin = {k: v for k, v in maps.items() if "globl" in k}
    assert len(swin) == 6  # encoder 2, bottleneck and decoder 2, two blocks each
    assert all(torch.allclose(v.sum(-1), torch.ones(())) for v in maps.values())
    # Recording is switched off again afterwards.
    assert (
        model(torch.zeros(1, 2, 32, 32), torch.tensor([0.0, 90.0]))["attention"] is None
    )
    fig = plot_attention(maps)
    assert len(fig.axes) >= 6
