"""Cross-view attention looks only at other views, with the same weights for any count."""

from __future__ import annotations

import torch

from ct_pipeline.models.cross_view import CrossViewAttention


def test_tokens_attend_only_to_other_views() -> None:
    torch.manual_seed(0)
    attn = CrossViewAttention(16, 2)
    for num_views in (2, 4, 8):
        x = torch.randn(2, num_views, 16, 3, 3)
        attn.record = True
        out = attn(x, torch.arange(num_views) * 180.0 / num_views)
        assert out.shape == x.shape
        weights = attn.last_weights  # (B, heads, T, T)
        view_of = torch.arange(num_views).repeat_interleave(9)
        same = (view_of[:, None] == view_of[None, :]).expand_as(weights)
        assert (weights[same] == 0).all() and (weights[~same] > 0).all()
        attn.record = False
        assert torch.allclose(
            attn(x, torch.arange(num_views) * 180.0 / num_views), out, atol=1e-5
        )


def test_it_starts_as_the_identity_and_the_view_angle_matters_once_trained() -> None:
    torch.manual_seed(0)
    attn = CrossViewAttention(16, 2)
    x = torch.randn(1, 2, 16, 2, 2)
    # Zero-initialised gates: an untrained block passes the features through.
    torch.testing.assert_close(attn(x, torch.tensor([0.0, 90.0])), x)
    with torch.no_grad():
        attn.gate_attention.fill_(1.0)
        attn.gate_mlp.fill_(1.0)
    assert not torch.allclose(
        attn(x, torch.tensor([0.0, 90.0])), attn(x, torch.tensor([0.0, 60.0]))
    )
