"""Memory and FLOPs of one training step of a config, estimated on the CPU.

Runs the forward pass, the six-term loss and the backward pass on PyTorch's
meta device (shapes only: no memory, no arithmetic), so the ``medical`` config
at 128^3 is estimated on a laptop. Reports per sample:

- FLOPs of the step (torch.utils.flop_counter: convolutions and matrix
  products, forward and backward; grid sampling and element-wise work are not
  counted, so this is a lower bound),
- activations kept for the backward pass (every tensor autograd saves, each
  counted once), plain and with ``train.activation_checkpointing``; with it,
  the backward pass also holds one recomputed block or lifting chunk at a time,
- weights + gradients + AdamW state (4 copies of the parameters, fp32).

bf16 autocast (the CUDA default) roughly halves the activations.

    .venv/bin/python benchmarks/estimate_medical.py --out benchmarks/results/medical_estimate.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.models import build_model, count_parameters
from ct_pipeline.models.memory import enable_activation_checkpointing

GIB = 2**30


def estimate(
    model_name: str,
    size: int,
    spacing_mm: float,
    geometry: Geometry,
    views: int,
    checkpointing: bool,
) -> dict[str, float]:
    meta = torch.device("meta")
    with meta:
        model = build_model(model_name, geometry, CubeGrid(size, spacing_mm), views)
    if checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    loss_fn = ReconstructionLoss().to(meta)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    views_t = torch.zeros(1, views, *geometry.detector_px, device=meta)
    target = torch.zeros(1, 1, size, size, size, device=meta)
    angles = torch.tensor(default_angles(views))
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            total, _ = loss_fn(model(views_t, angles), target)
        total.backward()
    params = count_parameters(model)
    return {
        "params_m": params / 1e6,
        "tflops": counter.get_total_flops() / 1e12,
        "activations_gib": sum(saved.values()) / GIB,
        "weights_optimiser_gib": 4 * 4 * params / GIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="medical")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--px", type=int, default=256)
    parser.add_argument("--pixel-mm", type=float, default=2.4)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    geometry = Geometry(detector_px=(args.px, args.px), pixel_mm=args.pixel_mm)
    lines = [
        f"`{args.model}` at {args.size}^3 ({args.spacing} mm), {args.px}^2 detector "
        f"({args.pixel_mm} mm pixels), per sample, fp32; estimated on the meta "
        f"device with torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n",
        "| views | parameters | step FLOPs (fwd + bwd) | activations kept | "
        "with activation checkpointing | weights + grads + AdamW |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for views in args.views:
        common = (args.model, args.size, args.spacing, geometry, views)
        plain = estimate(*common, checkpointing=False)
        chunked = estimate(*common, checkpointing=True)
        lines.append(
            f"| {views} | {plain['params_m']:.1f} M | {plain['tflops']:.2f} TFLOP | "
            f"{plain['activations_gib']:.1f} GiB | {chunked['activations_gib']:.1f} GiB | "
            f"{plain['weights_optimiser_gib']:.2f} GiB |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
