"""The six-term reconstruction loss.

total = 1.0 L1 + 0.3 (1 - SSIM) + 0.2 perceptual + 0.2 edge
        + 0.2 deep supervision + 0.3 frequency      (weights are parameters)

- ssim: ``metrics.ssim_3d`` (11^3 Gaussian window), so every side of the
  volume must be >= 11; smaller volumes raise ValueError (set its weight to 0
  to train on them anyway).
- perceptual: L1 between the features of a frozen network, chosen by name:
  "random_conv3d" (default) a fixed-seed, randomly initialised, frozen 3-D
  conv stack -- nothing to download, identical on every machine; random
  conv features are a known working perceptual prior (Ulyanov et al. 2018,
  "Deep image prior"; He et al. 2016, random-weight texture synthesis);
  "vgg16:/path/to/vgg16.pth" slice-wise 2-D VGG16 features (relu1_2, relu2_2,
  relu3_3) from a LOCAL torchvision-format state dict ("features.N.weight");
  "none" disables the term. A missing weights file is an error, never a
  silent fallback.
- edge: L1 between 3-D Sobel gradient magnitudes.
- deep_supervision: mean L1 of each coarse head against the average-pooled target.
- frequency: L1 between FFT magnitudes (orthonormal 3-D real FFT).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ct_pipeline.metrics import ssim_3d

DEFAULT_WEIGHTS: dict[str, float] = {
    "l1": 1.0,
    "ssim": 0.3,
    "perceptual": 0.2,
    "edge": 0.2,
    "deep_supervision": 0.2,
    "frequency": 0.3,
}
RANDOM_CONV_SEED = 1234
# torchvision's VGG16 "features" layout up to relu3_3; the ints are conv widths.
_VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256)
_VGG16_TAPS = (3, 8, 15)  # indices of relu1_2, relu2_2, relu3_3 in "features"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class RandomConv3dFeatures(nn.Module):
    """Frozen 3-D conv stack with fixed-seed Kaiming weights; features at 3 depths.

    The weights are buffers, not parameters: no optimiser or DDP wrapper sees them.
    """

    widths = (1, 8, 16, 32)

    def __init__(self, seed: int = RANDOM_CONV_SEED) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        for i, (c_in, c_out) in enumerate(
            zip(self.widths[:-1], self.widths[1:], strict=True)
        ):
            std = (2.0 / (c_in * 27)) ** 0.5
            self.register_buffer(
                f"w{i}", torch.randn(c_out, c_in, 3, 3, 3, generator=generator) * std
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(len(self.widths) - 1):
            x = F.relu(
                F.conv3d(
                    x, getattr(self, f"w{i}"), padding=1, stride=1 if i == 0 else 2
                )
            )
            features.append(x)
        return features


class Vgg16SliceFeatures(nn.Module):
    """VGG16 conv features of every axial slice, from a local weights file."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual='vgg16:{weights_path}': no weights file there. Give a local "
                "torchvision-format VGG16 state dict, or use perceptual='random_conv3d' or 'none'."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        layers: list[nn.Module] = []
        c_in = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU()]
                c_in = int(item)
        self.features = nn.Sequential(*layers)
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        missing = set(self.state_dict()) - set(wanted)
        if missing:
            raise ValueError(f"VGG16 weights in {path} lack {sorted(missing)[:4]}...")
        self.load_state_dict({k: wanted[k] for k in self.state_dict()})
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, c, d, h, w = x.shape  # axial slices: k (superior axis) is the last one
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * w, c, d, h).expand(-1, 3, -1, -1)
        y = (slices - self.mean) / self.std
        features = []
        for index, layer in enumerate(self.features):
            y = layer(y)
            if index in _VGG16_TAPS:
                features.append(y)
        return features


def build_perceptual(spec: str) -> nn.Module | None:
    """ "random_conv3d", "vgg16:<path>" or "none" -> frozen feature network or None."""
    if spec == "none":
        return None
    if spec == "random_conv3d":
        return RandomConv3dFeatures()
    if spec.startswith("vgg16:"):
        return Vgg16SliceFeatures(spec.removeprefix("vgg16:"))
    raise ValueError(
        f"perceptual must be 'random_conv3d', 'vgg16:<path>' or 'none', got {spec!r}"
    )


def sobel_magnitude_3d(x: torch.Tensor) -> torch.Tensor:
    """|grad x| from 3-D Sobel filters (derivative x smoothing x smoothing), (B, 1, ...).

    Each filter is applied separably, as shifted slices of the replicate-padded
    volume (derivative [-1, 0, 1], smoothing [1, 2, 1] along each axis):
    the 3x3x3 Sobel sums, an order of magnitude faster forward and backward on
    CPU than a one-channel conv3d.
    """
    padded = F.pad(x, (1,) * 6, mode="replicate")
    squared = torch.zeros_like(x)
    for derivative_axis in range(3):
        filtered = padded
        for axis in range(2, 5):
            n = filtered.shape[axis] - 2
            before, centre, after = (filtered.narrow(axis, s, n) for s in range(3))
            filtered = (
                after - before
                if axis == 2 + derivative_axis
                else before + 2 * centre + after
            )
        squared = squared + filtered**2
    # The epsilon keeps sqrt differentiable where the volume is flat.
    return torch.sqrt(squared + 1e-8)


class ReconstructionLoss(nn.Module):
    """``total, terms = loss(output, target)`` with output the model's dict
    ({"volume": (B, 1, D, D, D), "deep": [coarser volumes]}) and target
    (B, 1, D, D, D) in [0, 1]; terms maps name -> detached scalar."""

    def __init__(
        self, weights: dict[str, float] | None = None, perceptual: str = "random_conv3d"
    ) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"unknown loss weights {sorted(unknown)}, expected some of {sorted(DEFAULT_WEIGHTS)}"
            )
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.perceptual_net = build_perceptual(perceptual)

    def forward(
        self, output: Mapping[str, object], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred = output["volume"]
        if (
            not isinstance(pred, torch.Tensor)
            or pred.shape != target.shape
            or target.ndim != 5
        ):
            raise ValueError(
                f"expected output['volume'] and target of one shape (B, 1, D, H, W), got "
                f"{getattr(pred, 'shape', None)} and {tuple(target.shape)}"
            )
        terms = {
            "l1": F.l1_loss(pred, target),
            "ssim": self._ssim(pred, target),
            "perceptual": self._perceptual(pred, target),
            "edge": F.l1_loss(sobel_magnitude_3d(pred), sobel_magnitude_3d(target)),
            "deep_supervision": self._deep(
                list(cast(list[torch.Tensor], output.get("deep") or [])), target
            ),
            "frequency": F.l1_loss(
                torch.fft.rfftn(pred, dim=(2, 3, 4), norm="ortho").abs(),
                torch.fft.rfftn(target, dim=(2, 3, 4), norm="ortho").abs(),
            ),
        }
        total = cast(
            torch.Tensor,
            sum(self.weights[name] * value for name, value in terms.items()),
        )
        return total, {name: value.detach() for name, value in terms.items()}

    def _ssim(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weights["ssim"] == 0:
            return pred.new_zeros(())
        return 1 - ssim_3d(pred, target).mean()

    def _perceptual(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.perceptual_net is None or self.weights["perceptual"] == 0:
            return pred.new_zeros(())
        with torch.no_grad():
            reference = self.perceptual_net(target)
        return cast(
            torch.Tensor,
            sum(
                F.l1_loss(f, r)
                for f, r in zip(self.perceptual_net(pred), reference, strict=True)
            ),
        )

    @staticmethod
    def _deep(coarse: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not coarse:
            return target.new_zeros(())
        losses = []
        for prediction in coarse:
            factor = target.shape[-1] // prediction.shape[-1]
            if prediction.shape[2:] != tuple(n // factor for n in target.shape[2:]):
                raise ValueError(
                    f"deep prediction {tuple(prediction.shape)} is not the target "
                    f"{tuple(target.shape)} downsampled by an integer factor"
                )
            losses.append(F.l1_loss(prediction, F.avg_pool3d(target, factor)))
        return torch.stack(losses).mean()
