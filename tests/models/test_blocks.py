"""The U-Net's building blocks against the torch operations they stand for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ct_pipeline.models.blocks import Pointwise3d, SameConv3d


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_is_the_1x1x1_convolution_forward_and_backward(bias: bool) -> None:
    torch.manual_seed(0)
    layer = Pointwise3d(5, 3, bias=bias)
    x = torch.randn(2, 5, 4, 6, 7, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    y = layer(x)
    y_ref = F.conv3d(x_ref, layer.weight, layer.bias)
    torch.testing.assert_close(y, y_ref)

    grad = torch.randn_like(y)
    weight_grad, x_grad = torch.autograd.grad(y, (layer.weight, x), grad)
    weight_grad_ref, x_grad_ref = torch.autograd.grad(
        y_ref, (layer.weight, x_ref), grad
    )
    torch.testing.assert_close(x_grad, x_grad_ref)
    torch.testing.assert_close(weight_grad, weight_grad_ref)


@pytest.mark.parametrize("bias", [True, False])
def test_same_conv_gradients_are_the_convolution_s(bias: bool) -> None:
    # Its weight gradient is computed another way on CPU; in float64 every
    # gradient must be the library convolution's to rounding.
    torch.manual_seed(0)
    layer = SameConv3d(3, 4, bias=bias).double()
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    y = layer(x)
    y_ref = F.conv3d(x_ref, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(y, y_ref)

    grad = torch.randn_like(y)
    params = [layer.weight] + ([layer.bias] if bias else [])
    got = torch.autograd.grad(y, [x, *params], grad)
    want = torch.autograd.grad(y_ref, [x_ref, *params], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_same_conv_backward_under_cpu_autocast() -> None:
    # The backward pass must run in the forward's autocast state, or its
    # convolutions meet a bfloat16 gradient and float32 weights.
    torch.manual_seed(0)
    layer = SameConv3d(2, 3)
    ref = torch.nn.Conv3d(2, 3, 3, padding=1, bias=False)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(1, 2, 4, 4, 4)
    grads = []
    for conv in (layer, ref):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), conv.weight)[0])
    assert grads[0].dtype == torch.float32
    torch.testing.assert_close(grads[0], grads[1], rtol=0.05, atol=0.05)


def test_same_conv_without_input_gradient() -> None:
    # A frozen input (the first layer's) asks only for the weight gradient.
    layer = SameConv3d(2, 2)
    x = torch.randn(1, 2, 4, 4, 4)
    (weight_grad,) = torch.autograd.grad(layer(x).square().sum(), layer.weight)
    ref = torch.nn.Conv3d(2, 2, 3, padding=1, bias=False)
    ref.load_state_dict(layer.state_dict())
    (weight_grad_ref,) = torch.autograd.grad(ref(x).square().sum(), ref.weight)
    torch.testing.assert_close(weight_grad, weight_grad_ref)


def test_pointwise_loads_a_convolution_s_weights() -> None:
    # Bundles saved when these layers were nn.Conv3d(c_in, c_out, 1) still load.
    conv = torch.nn.Conv3d(4, 2, 1)
    layer = Pointwise3d(4, 2)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 3, 3, 3)
    torch.testing.assert_close(layer(x), conv(x))
