"""The U-Net's building blocks against the torch operations they stand for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ct_pipeline.models.blocks import Pointwise3d


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


def test_pointwise_loads_a_convolution_s_weights() -> None:
    # Bundles saved when these layers were nn.Conv3d(c_in, c_out, 1) still load.
    conv = torch.nn.Conv3d(4, 2, 1)
    layer = Pointwise3d(4, 2)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 3, 3, 3)
    torch.testing.assert_close(layer(x), conv(x))
