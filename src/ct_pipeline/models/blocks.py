"""Convolutional 3-D building blocks of the reconstruction U-Net.

Every block maps (B, C_in, D, H, W) -> (B, C_out, D, H, W). GroupNorm rather
than BatchNorm: the demo trains at batch 2, where batch statistics are noise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class Pointwise3d(nn.Conv3d):
    """``nn.Conv3d(in_channels, out_channels, 1)`` computed as a matrix product.

    The same parameters and state-dict entries as the convolution; takes
    (B, C_in, *spatial) with any number of spatial axes, (B, C_in, N) too.
    On CPU the 1x1x1 convolution is 1.5-3x slower than the product, forward
    and backward, at the full-resolution level, where these run every step.
    The product is a bmm with the weight expanded over the batch (no copy),
    not ``weight @ x``: torch.matmul folds that broadcast into a transposed
    copy of ``x``, 2-5x slower again.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, C_in, N)
        weight = self.weight.flatten(1).expand(x.shape[0], -1, -1)
        y = (
            torch.bmm(weight, flat)
            if self.bias is None
            else torch.baddbmm(self.bias[:, None], weight, flat)
        )
        return y.view(x.shape[0], -1, *x.shape[2:])


class _SameConv3dFunction(torch.autograd.Function):
    """3x3x3 convolution, stride 1, padding 1, whose weight gradient is itself
    a convolution: grad_w[o, i, k] = sum over batch b and voxel s of
    grad[b, o, s] * x[b, i, s + k - 1], i.e. ``x`` with the batch as channels
    convolved by ``grad`` as the kernel. Under autocast the backward pass runs
    in the forward's autocast state, so its convolutions see one dtype."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv3d(x, weight, bias, padding=1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = F.conv_transpose3d(grad, weight, padding=1) if needs[0] else None
        grad_w = None
        if needs[1]:
            grad_w = F.conv3d(x.transpose(0, 1), grad.transpose(0, 1), padding=1)
            grad_w = grad_w.transpose(0, 1)
        grad_b = grad.sum((0, 2, 3, 4)) if needs[2] else None
        return grad_x, grad_w, grad_b


class SameConv3d(nn.Conv3d):
    """``nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=bias)``.

    The same parameters and state-dict entries. On CPU its weight gradient
    goes through ``_SameConv3dFunction``: oneDNN's own weight gradient of a
    3x3x3 convolution is 2.5x slower than that convolution at every level of
    the U-Net on an AVX2 CPU, and these gradients were half of a training
    step (``benchmarks/results/conv3d_backward.md``). GPUs keep cuDNN's.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        out: torch.Tensor = _SameConv3dFunction.apply(x, self.weight, self.bias)
        return out


class ConvNormAct3d(nn.Sequential):
    """3x3x3 conv -> GroupNorm -> GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            SameConv3d(in_channels, out_channels),
            group_norm(out_channels),
            nn.GELU(),
        )


class ResidualDenseBlock3d(nn.Module):
    """Residual dense block (Zhang et al. 2018): densely connected convs, local
    1x1x1 fusion, and a residual from a 1x1x1 projection of the input."""

    def __init__(
        self, in_channels: int, out_channels: int, growth: int, layers: int = 3
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, growth, layers) < 1:
            raise ValueError(
                "ResidualDenseBlock3d expects positive in/out channels, growth and layers, got "
                f"{in_channels}, {out_channels}, {growth}, {layers}"
            )
        self.project = Pointwise3d(in_channels, out_channels)
        self.dense = nn.ModuleList(
            ConvNormAct3d(out_channels + i * growth, growth) for i in range(layers)
        )
        self.fuse = Pointwise3d(out_channels + layers * growth, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)  # (B, C_out, D, H, W)
        features = [x]
        for layer in self.dense:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.fuse(torch.cat(features, dim=1))


class ConvBlock3d(nn.Module):
    """Plain residual double conv: the ablation of ``ResidualDenseBlock3d``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = Pointwise3d(in_channels, out_channels)
        self.body = nn.Sequential(
            ConvNormAct3d(out_channels, out_channels),
            ConvNormAct3d(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return x + self.body(x)


def conv_block(
    in_channels: int, out_channels: int, residual_dense: bool, growth: int
) -> nn.Module:
    """The U-Net's local block, switchable for the residual-dense ablation."""
    if residual_dense:
        return ResidualDenseBlock3d(in_channels, out_channels, growth)
    return ConvBlock3d(in_channels, out_channels)


class AttentionGate3d(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018).

    The decoder's gating signal g (same grid as the skip x) decides, voxel by
    voxel, how much of the skip passes: x * sigmoid(psi(relu(Wx x + Wg g))).
    """

    def __init__(
        self, skip_channels: int, gate_channels: int, inter_channels: int
    ) -> None:
        super().__init__()
        self.theta = Pointwise3d(skip_channels, inter_channels, bias=False)
        self.phi = Pointwise3d(gate_channels, inter_channels)
        self.psi = Pointwise3d(inter_channels, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        if skip.shape[2:] != gate.shape[2:]:
            raise ValueError(
                f"attention gate expects skip and gate on one grid, got {tuple(skip.shape)} "
                f"and {tuple(gate.shape)}"
            )
        alpha = torch.sigmoid(
            self.psi(torch.relu(self.theta(skip) + self.phi(gate)))
        )  # (B, 1, ...)
        return skip * alpha
