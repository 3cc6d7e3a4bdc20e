"""Window partition, the shift mask and window attention."""

from __future__ import annotations

import torch

from ct_pipeline.models.swin3d import (
    SwinBlock3d,
    WindowAttention3d,
    shift_mask,
    window_partition,
    window_reverse,
)


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 8, 4, 12, 5)
    windows = window_partition(x, (4, 2, 4))
    assert windows.shape == (2 * 2 * 2 * 3, 32, 5)
    # First window holds exactly the first 4x2x4 corner block, in C order.
    assert torch.equal(windows[0], x[0, :4, :2, :4].reshape(32, 5))
    assert torch.equal(window_reverse(windows, (4, 2, 4), (8, 4, 12)), x)


def _wrapped_pairs(grid: int, window: int, shift: int) -> torch.Tensor:
    """True where two tokens of one shifted window were not neighbours before the roll."""
    axis = torch.arange(grid, dtype=torch.float32)
    coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)[None]
    rolled = torch.roll(coords, (-shift,) * 3, dims=(1, 2, 3))
    windows = window_partition(rolled, (window,) * 3)  # (nW, N, 3) original coordinates
    gap = (windows[:, :, None, :] - windows[:, None, :, :]).abs()
    return (gap >= window).any(dim=-1)


def test_shift_mask_blocks_exactly_the_wrapped_pairs() -> None:
    mask = shift_mask((8, 8, 8), (4, 4, 4), (2, 2, 2))
    wrapped = _wrapped_pairs(8, 4, 2)
    assert wrapped.any() and (~wrapped).any()
    assert torch.equal(torch.isinf(mask), wrapped)
    assert (mask[~wrapped] == 0).all()


def test_shifted_attention_weights_are_zero_across_the_wrapped_border() -> None:
    torch.manual_seed(0)
    block = SwinBlock3d(8, 2, (8, 8, 8), window=4, shifted=True, mlp_ratio=2.0)
    assert block.shift == (2, 2, 2) and "mask" in dict(block.named_buffers())
    block.attn.record = True
    block(torch.randn(3, 8, 8, 8, 8))
    weights = block.attn.last_weights  # (B * nW, heads, N, N)
    wrapped = _wrapped_pairs(8, 4, 2).repeat(3, 1, 1)[:, None].expand_as(weights)
    assert (weights[wrapped] == 0).all()
    assert (weights[~wrapped] > 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(()))


def test_fused_and_recorded_attention_agree() -> None:
    torch.manual_seed(0)
    attn = WindowAttention3d(16, 4, (4, 4, 4))
    x = torch.randn(2 * 8, 64, 16)
    mask = shift_mask((8, 8, 8), (4, 4, 4), (2, 2, 2))
    fused = attn(x, mask)
    attn.record = True
    assert torch.allclose(attn(x, mask), fused, atol=1e-5)
    assert torch.allclose(attn(x, None), WindowAttention3d.forward(attn, x, None))


def test_window_larger_than_grid_becomes_global_without_shift() -> None:
    block = SwinBlock3d(8, 2, (2, 2, 2), window=4, shifted=True, mlp_ratio=2.0)
    assert block.window == (2, 2, 2) and block.shift == (0, 0, 0) and block.mask is None
    assert block(torch.randn(1, 2, 2, 2, 8)).shape == (1, 2, 2, 2, 8)
