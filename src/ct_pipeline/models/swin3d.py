"""3-D Swin Transformer blocks (Liu et al. 2021, Video Swin / SwinUNETR style).

Tokens are voxels, channel-last (B, D, H, W, C). Attention runs inside
non-overlapping cubic windows; every second block rolls the grid by half a
window so information crosses window borders. After the roll, a window at the
far edge holds voxels from opposite sides of the volume; the shift mask (built
once per resolution, a registered buffer) forbids attention between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ct_pipeline.models.blocks import Pointwise3d, conv_block

Size3 = tuple[int, int, int]


def window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * num_windows, wd * wh * ww, C)."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    if d % wd or h % wh or w % ww:
        raise ValueError(f"grid {(d, h, w)} must be divisible by the window {window}")
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Size3, grid: Size3) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * num_windows, N, C) -> (B, D, H, W, C)."""
    d, h, w = grid
    wd, wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, d // wd, h // wh, w // ww, wd, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, d, h, w, c)


def relative_position_index(window: Size3) -> torch.Tensor:
    """(N, N) index into the (2wd-1)(2wh-1)(2ww-1) relative-bias table."""
    coords = torch.stack(
        torch.meshgrid(*(torch.arange(n) for n in window), indexing="ij")
    )
    coords = coords.flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N)
    for axis, n in enumerate(window):
        rel[axis] += n - 1
    _, wh, ww = window
    return rel[0] * (2 * wh - 1) * (2 * ww - 1) + rel[1] * (2 * ww - 1) + rel[2]


def shift_mask(grid: Size3, window: Size3, shift: Size3) -> torch.Tensor:
    """Additive mask (num_windows, N, N): 0 within a region, -inf across regions.

    Regions are the 3 slabs per axis that the cyclic roll by -shift brings
    together; tokens of different regions were not neighbours before the roll.
    """
    labels = torch.zeros(1, *grid, 1)
    count = 0
    slabs = [
        ((0, -w), (-w, -s), (-s, None)) if s else ((0, None),)
        for w, s in zip(window, shift, strict=True)
    ]
    for sd in slabs[0]:
        for sh in slabs[1]:
            for sw in slabs[2]:
                labels[:, slice(*sd), slice(*sh), slice(*sw), :] = count
                count += 1
    regions = window_partition(labels, window).squeeze(-1)  # (num_windows, N)
    different = regions[:, :, None] != regions[:, None, :]
    return torch.zeros(different.shape).masked_fill(different, float("-inf"))


class WindowAttention3d(nn.Module):
    """Multi-head self-attention within a window, with relative position bias.

    Set ``record = True`` to keep the last softmax weights (B * nW, heads, N, N)
    in ``last_weights`` (used by ``inspect.attention_maps``); otherwise the fused
    scaled-dot-product kernel runs and no weights are materialised.
    """

    def __init__(self, dim: int, heads: int, window: Size3) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"dim must be divisible by heads, got dim={dim}, heads={heads}"
            )
        self.heads, self.window = heads, window
        self.rel_index: torch.Tensor
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.bias_table = nn.Parameter(torch.randn(table, heads) * 0.02)
        self.register_buffer(
            "rel_index", relative_position_index(window), persistent=False
        )
        self.record = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape  # (B * nW, N, C)
        q, k, v = (
            self.qkv(x)
            .view(bw, n, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        bias = self.bias_table[self.rel_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            # Windows vary fastest inside B * nW (window_partition's order).
            num_windows = mask.shape[0]
            q, k, v = (
                t.view(bw // num_windows, num_windows, *t.shape[1:]) for t in (q, k, v)
            )
            bias = bias[None] + mask[:, None]  # (nW, heads, N, N)
        if self.record:
            weights = torch.softmax(
                (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias, dim=-1
            )
            self.last_weights = weights.detach().reshape(bw, self.heads, n, n)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = (
            out.reshape(bw, self.heads, n, c // self.heads)
            .transpose(1, 2)
            .reshape(bw, n, c)
        )
        return self.proj(out)


class SwinBlock3d(nn.Module):
    """Pre-norm (shifted-)window attention + MLP on a fixed grid (B, D, H, W, C).

    A window larger than the grid shrinks to the grid (global attention), and
    then there is nothing to shift.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: Size3,
        window: int,
        shifted: bool,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.window: Size3 = tuple(min(window, g) for g in grid)  # type: ignore[assignment]
        if any(g % w for g, w in zip(grid, self.window, strict=True)):
            raise ValueError(
                f"grid {grid} must be divisible by the window {self.window}"
            )
        self.shift: Size3 = tuple(  # type: ignore[assignment]
            w // 2 if shifted and g > w else 0
            for g, w in zip(grid, self.window, strict=True)
        )
        self.grid = grid
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention3d(dim, heads, self.window)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        mask = shift_mask(grid, self.window, self.shift) if any(self.shift) else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:4]) != self.grid:
            raise ValueError(
                f"SwinBlock3d built for grid {self.grid}, got {tuple(x.shape[1:4])}"
            )
        shifted = self.norm1(x)
        if any(self.shift):
            shifted = torch.roll(shifted, [-s for s in self.shift], dims=(1, 2, 3))
        windows = self.attn(window_partition(shifted, self.window), self.mask)
        shifted = window_reverse(windows, self.window, self.grid)
        if any(self.shift):
            shifted = torch.roll(shifted, list(self.shift), dims=(1, 2, 3))
        x = x + shifted
        return x + self.mlp(self.norm2(x))


class SwinStage3d(nn.Module):
    """``depth`` Swin blocks alternating plain and shifted windows, on (B, C, D, H, W)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: Size3,
        window: int,
        depth: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock3d(
                dim, heads, grid, window, shifted=i % 2 == 1, mlp_ratio=mlp_ratio
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 4, 1)  # (B, D, H, W, C)
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 4, 1, 2, 3).contiguous()


class HybridBlock3d(nn.Module):
    """Local/global fusion: a conv branch and a Swin branch, fused by a 1x1x1
    conv over their concatenation, (B, C_in, D, H, W) -> (B, C_out, D, H, W).

    The fusion is a residual on the conv branch scaled per channel by ``gate``,
    zero at start (ReZero / LayerScale): the block starts as the CNN block and
    takes from the transformer only what training finds useful. Measured at
    32^3 on CPU, an ungated fusion let the untrained Swin branch slow early
    training enough that the hybrid lost to its own CNN-only ablation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: Size3,
        *,
        residual_dense: bool,
        growth: int,
        heads: int,
        window: int,
        depth: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.local = conv_block(in_channels, out_channels, residual_dense, growth)
        self.embed = Pointwise3d(in_channels, out_channels)
        self.globl = SwinStage3d(out_channels, heads, grid, window, depth, mlp_ratio)
        self.fuse = Pointwise3d(2 * out_channels, out_channels)
        self.gate = nn.Parameter(torch.zeros(1, out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x)
        mixed = self.fuse(torch.cat([local, self.globl(self.embed(x))], dim=1))
        return local + self.gate * mixed
