"""The six-term reconstruction loss: zero when equal, positive and differentiable otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ct_pipeline.losses import DEFAULT_WEIGHTS, ReconstructionLoss, sobel_magnitude_3d

TERMS = list(DEFAULT_WEIGHTS)


def _output(volume: torch.Tensor) -> dict[str, object]:
    return {"volume": volume, "deep": [F.avg_pool3d(volume, f) for f in (2, 4, 8)]}


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    target = torch.rand(2, 1, 16, 16, 16)
    smooth = F.avg_pool3d(torch.rand(2, 1, 16, 16, 16), 3, stride=1, padding=1)
    return target, smooth


def test_default_weights_are_the_design_ones() -> None:
    assert DEFAULT_WEIGHTS == {
        "l1": 1.0,
        "ssim": 0.3,
        "perceptual": 0.2,
        "edge": 0.2,
        "deep_supervision": 0.2,
        "frequency": 0.3,
    }


def test_identical_volumes_give_zero_terms() -> None:
    target, _ = _pair()
    total, terms = ReconstructionLoss()(_output(target.clone()), target)
    assert set(terms) == set(TERMS)
    for name, value in terms.items():
        assert abs(value.item()) < 1e-6, name
    assert abs(total.item()) < 1e-6


@pytest.mark.parametrize("name", TERMS)
def test_each_term_is_positive_and_differentiable(name: str) -> None:
    target, other = _pair()
    weights = {term: float(term == name) for term in TERMS}
    loss_fn = ReconstructionLoss(weights)
    prediction = other.clone().requires_grad_()
    output = _output(prediction)
    total, terms = loss_fn(output, target)
    assert terms[name] > 0
    assert torch.isclose(total, terms[name])
    total.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert torch.isfinite(prediction.grad).all()


def test_deep_supervision_compares_with_the_pooled_target() -> None:
    target, _ = _pair()
    coarse = F.avg_pool3d(target, 2)
    weights = {term: float(term == "deep_supervision") for term in TERMS}
    _, terms = ReconstructionLoss(weights)(
        {"volume": target, "deep": [coarse + 0.1]}, target
    )
    assert torch.isclose(terms["deep_supervision"], torch.tensor(0.1), atol=1e-6)
    _, terms = ReconstructionLoss(weights)({"volume": target, "deep": []}, target)
    assert terms["deep_supervision"] == 0


def test_sobel_magnitude_of_a_linear_ramp() -> None:
    # f = 2 i: the Sobel x-derivative is 2 (central difference) * 2 * 16 (smoothing sums).
    ramp = (2.0 * torch.arange(8.0))[:, None, None].expand(8, 8, 8)[None, None]
    magnitude = sobel_magnitude_3d(ramp)[0, 0, 1:-1, 1:-1, 1:-1]
    assert torch.allclose(magnitude, torch.full_like(magnitude, 2 * 2 * 16), atol=1e-3)


def test_sobel_magnitude_matches_scipy_on_a_random_volume() -> None:
    # scipy.ndimage.sobel: derivative [-1, 0, 1] along one axis, [1, 2, 1]
    # along the others; mode "nearest" is the replicate padding.
    from scipy import ndimage

    volume = np.random.default_rng(0).random((9, 10, 11))
    expected = np.sqrt(
        sum(ndimage.sobel(volume, axis=a, mode="nearest") ** 2 for a in range(3))
    )
    got = sobel_magnitude_3d(torch.from_numpy(volume)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown loss weights"):
        ReconstructionLoss({"l2": 1.0})
    with pytest.raises(ValueError, match="perceptual must be"):
        ReconstructionLoss(perceptual="resnet")
    with pytest.raises(ValueError, match="ssim_3d needs every side"):
        small = torch.rand(1, 1, 8, 8, 8)
        ReconstructionLoss()(_output(small), small)


def test_vgg16_missing_weights_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no weights file"):
        ReconstructionLoss(perceptual=f"vgg16:{tmp_path / 'absent.pth'}")


def test_vgg16_from_a_local_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # A torchvision-format state dict: conv weights at features.{0,2,5,7,10,12,14}.
    widths = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
    ]
    state = {}
    for index, (c_in, c_out) in zip((0, 2, 5, 7, 10, 12, 14), widths, strict=True):
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    weights = {term: float(term == "perceptual") for term in TERMS}
    loss_fn = ReconstructionLoss(weights, perceptual=f"vgg16:{path}")
    assert not any(p.requires_grad for p in loss_fn.parameters())
    target, other = _pair()
    _, same = loss_fn(_output(target), target)
    assert same["perceptual"] == 0
    prediction = other.clone().requires_grad_()
    total, terms = loss_fn(_output(prediction), target)
    assert terms["perceptual"] > 0
    total.backward()
    assert prediction.grad.abs().sum() > 0
