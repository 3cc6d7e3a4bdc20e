"""Cross-view multi-head attention between the views' coarse feature maps.

Tokens are the pixels of every view's 1/8-scale map, tagged with a fixed 2-D
sinusoidal position code and a learned embedding of the view angle
(sin/cos of theta and 2 theta). Each token attends to the tokens of all OTHER
views (all ordered pairs, so both directions for two views). The weights do
not depend on the number of views: the same module serves 2, 4 or 8.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_position_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal code (h * w, dim): half the channels per axis."""
    if dim % 4:
        raise ValueError(f"position code needs dim divisible by 4, got {dim}")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 4) / (dim // 4))
    rows = torch.arange(h)[:, None] * freqs  # (h, dim / 4)
    cols = torch.arange(w)[:, None] * freqs
    row_code = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(
        h, w, dim // 2
    )
    col_code = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(
        h, w, dim // 2
    )
    return torch.cat([row_code, col_code], dim=-1).reshape(h * w, dim)


class CrossViewAttention(nn.Module):
    """Pre-norm attention across views + MLP, (B, V, C, h, w) -> same shape.

    ``record = True`` keeps the softmax weights (B, heads, V*h*w, V*h*w) of the
    last call in ``last_weights``; otherwise the fused kernel runs.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"dim must be divisible by heads, got dim={dim}, heads={heads}"
            )
        self.heads = heads
        self.angle_embed = nn.Sequential(
            nn.Linear(4, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        # Zero-initialised residual scales (LayerScale): the block starts as the
        # identity, so the untrained attention cannot disturb the features.
        self.gate_attention = nn.Parameter(torch.zeros(dim))
        self.gate_mlp = nn.Parameter(torch.zeros(dim))
        self.record = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
        b, v, c, h, w = x.shape
        if angles_deg.shape != (v,):
            raise ValueError(
                f"expected angles_deg of shape ({v},), got {tuple(angles_deg.shape)}"
            )
        theta = torch.deg2rad(angles_deg.to(x))
        angle_code = torch.stack(
            [theta.sin(), theta.cos(), (2 * theta).sin(), (2 * theta).cos()], dim=-1
        )
        features = x.flatten(3).transpose(2, 3)  # (B, V, h*w, C)
        # Where and from which view a token comes: codes for the attention's
        # queries and keys only, not added to the features it returns.
        codes = (
            sincos_position_2d(h, w, c).to(x)[None, None]
            + self.angle_embed(angle_code)[None, :, None, :]
        )
        features = features.reshape(b, v * h * w, c)
        tokens = features + codes.expand(b, -1, -1, -1).reshape(b, v * h * w, c)

        view_of = torch.arange(v, device=x.device).repeat_interleave(h * w)
        # A lone view has no other view to look at: then it attends to itself.
        allowed = (
            view_of[:, None] != view_of[None, :]
            if v > 1
            else torch.ones(h * w, h * w, dtype=torch.bool, device=x.device)
        )
        q, k, val = (
            self.qkv(self.norm1(tokens)).view(
                b, v * h * w, 3, self.heads, c // self.heads
            )
        ).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, C / heads)
        if self.record:
            logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            self.last_weights = weights.detach()
            out = weights @ val
        else:
            out = F.scaled_dot_product_attention(q, k, val, attn_mask=allowed)
        attended = self.proj(out.transpose(1, 2).reshape(b, v * h * w, c))
        features = features + self.gate_attention * attended
        features = features + self.gate_mlp * self.mlp(self.norm2(features))
        return features.view(b, v, h * w, c).transpose(2, 3).reshape(b, v, c, h, w)
