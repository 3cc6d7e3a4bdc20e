"""Attention inspection: the weights of one forward pass, and a picture of them
that shows where attention goes (checked on weights whose answer is known)."""

from __future__ import annotations

import numpy as np
import torch

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.evaluation.attention import (
    attention_figure,
    cross_view_looks,
    swin_received,
)
from ct_pipeline.models import attention_maps, build_model
from ct_pipeline.models.swin3d import SwinBlock3d


def test_attention_maps_and_their_figure() -> None:
    torch.manual_seed(0)
    geometry = Geometry(detector_px=(32, 32), pixel_mm=12.0)
    model = build_model("tiny", geometry, CubeGrid(32, 12.0))
    views = torch.rand(1, 2, 32, 32) * 5
    maps = attention_maps(model, views, torch.tensor([0.0, 90.0]))
    assert maps["cross_view"].shape == (1, 2, 2 * 16, 2 * 16)  # 1/8 of 32 = 4x4 tokens
    swin = {k: v for k, v in maps.items() if "globl" in k}
    assert len(swin) == 6  # encoder 2, bottleneck and decoder 2, two blocks each
    assert all(torch.allclose(v.sum(-1), torch.ones(())) for v in maps.values())
    # Recording is switched off again afterwards.
    assert (
        model(torch.zeros(1, 2, 32, 32), torch.tensor([0.0, 90.0]))["attention"] is None
    )
    truth = np.full((32, 32, 32), -1000.0, dtype=np.float32)
    fig = attention_figure(model, maps, views[0].numpy(), [0.0, 90.0], truth, "p007")
    titles = [ax.get_title() for ax in fig.axes]
    assert fig.get_suptitle().startswith("p007")
    assert any("looks at, view 90° (left lateral)" in t for t in titles)
    # The first block of each of the 3 Swin levels (16^3, 8^3 and 16^3 again in
    # the decoder: at most 3 panels).
    assert sum(t.startswith("Swin, ") for t in titles) == 3
    assert any(t.startswith("Swin, bottleneck at 4") for t in titles)


def test_cross_view_looks_finds_the_token_a_query_attends_to() -> None:
    h, w, views = 4, 4, 2
    weights = torch.full((1, 2, views * h * w, views * h * w), 0.0)
    # Query token 5 of view 0 attends only to view 1's token at row 2, column 3.
    weights[0, :, 5, h * w + 2 * w + 3] = 1.0
    (look,) = cross_view_looks(weights, views, (h, w), [5])
    assert look.shape == (h, w)
    assert look[2, 3] == h * w  # 16 times uniform attention
    assert look.sum() == h * w


def test_swin_received_maps_windows_back_to_the_grid() -> None:
    plain = SwinBlock3d(8, 2, (4, 4, 4), 2, shifted=False, mlp_ratio=2.0)
    shifted = SwinBlock3d(8, 2, (4, 4, 4), 2, shifted=True, mlp_ratio=2.0)
    windows, n = 8, 8
    weights = torch.zeros(windows, 2, n, n)
    weights[..., 0] = 1.0  # every query attends to the first token of its window
    received = swin_received(weights, plain)
    expected = np.zeros((4, 4, 4))
    expected[::2, ::2, ::2] = n
    np.testing.assert_array_equal(received, expected)
    # In a shifted block the windows were taken from the grid rolled by -1:
    # its first tokens sit one voxel further on every axis.
    np.testing.assert_array_equal(
        swin_received(weights, shifted), np.roll(expected, 1, axis=(0, 1, 2))
    )
