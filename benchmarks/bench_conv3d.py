"""3x3x3 convolution weight gradients on CPU: oneDNN's against SameConv3d's.

Per U-Net level of the `small` model at the demo grid (batch 2), the median
time of the weight gradient as the library computes it and as a convolution
of the input by the output gradient (``models.blocks.SameConv3d``); then a
whole training step of `small` (2 views, six-term loss, AdamW) with every
``SameConv3d`` on each path. Writes a Markdown table to stdout and, with
--out, to a file.

    .venv/bin/python benchmarks/bench_conv3d.py --out benchmarks/results/conv3d_backward.md
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.models import build_model
from ct_pipeline.models.blocks import SameConv3d

# (in channels, out channels, side) of the 3x3x3 convolutions in `small`.
LAYERS = [
    (32, 16, 32),
    (16, 16, 32),
    (32, 8, 16),
    (16, 8, 16),
    (64, 16, 8),
    (96, 24, 4),
]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[repeats // 2]


def library_weight_gradient(
    x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    ones, zeros = [1] * 3, [0] * 3
    mask = [False, True, False]
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, ones, ones, ones, False, zeros, 1, mask
    )[1]


def weight_gradient_as_convolution(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x.transpose(0, 1), grad.transpose(0, 1), padding=1)


def weight_gradients(repeats: int) -> list[str]:
    rows = []
    for c_in, c_out, side in LAYERS:
        x = torch.randn(2, c_in, side, side, side)
        w = torch.randn(c_out, c_in, 3, 3, 3)
        grad = torch.randn(2, c_out, side, side, side)
        library = median_ms(partial(library_weight_gradient, x, w, grad), repeats)
        product = median_ms(partial(weight_gradient_as_convolution, x, grad), repeats)
        rows.append(
            f"| {c_in} -> {c_out} at {side}^3 | {library:.2f} | {product:.2f} "
            f"| {library / product:.2f} |"
        )
    return rows


def training_step_s(library: bool, steps: int) -> float:
    torch.manual_seed(0)
    geometry = Geometry()
    model = build_model("small", geometry, CubeGrid(32, 12.0), 2)
    if library:
        for module in model.modules():
            if isinstance(module, SameConv3d):
                module.forward = torch.nn.Conv3d.forward.__get__(module)  # type: ignore[method-assign]
    loss_fn = ReconstructionLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    views = torch.rand(2, 2, *geometry.detector_px) * 6
    angles = torch.tensor(default_angles(2))
    target = torch.rand(2, 1, 32, 32, 32)

    def step() -> None:
        total, _ = loss_fn(model(views, angles), target)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()

    return median_ms(step, steps) / 1000


def cpu_name() -> str:
    """The CPU's model name and widest vector extension (oneDNN's speed
    depends on both)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    vector = "AVX-512" if "avx512f" in info else "AVX2" if "avx2" in info else "no AVX2"
    return f"{name} ({vector})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [
        "# 3x3x3 convolution weight gradients on CPU",
        "",
        f"{cpu_name()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.repeats} (layers) / {args.steps} (steps).",
        "",
        "| layer (batch 2) | oneDNN weight gradient (ms) | as a convolution (ms) | ratio |",
        "|---|---:|---:|---:|",
        *weight_gradients(args.repeats),
        "",
    ]
    # Alternated, the lower of two medians each: the machine's speed drifts.
    pairs = [
        (training_step_s(True, args.steps), training_step_s(False, args.steps))
        for _ in range(2)
    ]
    library, ours = min(p[0] for p in pairs), min(p[1] for p in pairs)
    lines += [
        "| `small` training step, 2 views, batch 2 | s |",
        "|---|---:|",
        f"| library weight gradients | {library:.3f} |",
        f"| SameConv3d (shipped) | {ours:.3f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
