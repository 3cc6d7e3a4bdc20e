"""Training step time, samples/s and peak memory on one CUDA GPU.

For ``small`` (the demo's 32^3 grid, 64^2 detector) and ``medical`` (128^3 at
3 mm, 256^2 detector at 2.4 mm) at 2 and 8 views, batch 1 and 2, in bf16
autocast, with and without activation checkpointing: a full training step
(forward, six-term loss, backward, AdamW) on random inputs, 3 warm-up steps
then the mean of ``--steps``. Peak memory is torch's max allocated. A
configuration that runs out of memory is reported as such. Writes a Markdown
table to ``benchmarks/results/gpu.md`` (or ``--out``).

    .venv/bin/python benchmarks/bench_gpu.py

Without a CUDA device it says so and exits 0 (``--device cpu`` runs the same
measurement on the CPU, for the tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.models import build_model, count_parameters
from ct_pipeline.models.memory import enable_activation_checkpointing
from ct_pipeline.training.loop import float_output


@dataclass(frozen=True)
class Setup:
    model: str
    grid: CubeGrid
    geometry: Geometry


SETUPS = {
    "tiny": Setup(
        "tiny", CubeGrid(16, 24.0), Geometry(detector_px=(32, 32), pixel_mm=18.0)
    ),
    "small": Setup(
        "small", CubeGrid(32, 12.0), Geometry(detector_px=(64, 64), pixel_mm=9.0)
    ),
    "medical": Setup(
        "medical", CubeGrid(128, 3.0), Geometry(detector_px=(256, 256), pixel_mm=2.4)
    ),
}


def measure(
    setup: Setup,
    views: int,
    batch: int,
    checkpointing: bool,
    device: torch.device,
    steps: int,
) -> dict[str, object]:
    torch.manual_seed(0)
    model = build_model(setup.model, setup.geometry, setup.grid, views).to(device)
    if checkpointing:
        enable_activation_checkpointing(model)
    loss_fn = ReconstructionLoss().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.rand(batch, views, *setup.geometry.detector_px, device=device) * 4
    target = torch.rand(batch, 1, *(setup.grid.size,) * 3, device=device)
    angles = torch.tensor(default_angles(views), device=device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def step() -> None:
        with autocast:
            output = model(inputs, angles)
        total, _ = loss_fn(float_output(output), target)  # fp32, as in training
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    row: dict[str, object] = {
        "model": setup.model,
        "views": views,
        "batch": batch,
        "checkpointing": checkpointing,
        "params_m": count_parameters(model) / 1e6,
    }
    try:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - started) / steps
        row |= {
            "step_s": seconds,
            "samples_s": batch / seconds,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
            if cuda
            else float("nan"),
        }
    except torch.cuda.OutOfMemoryError:
        row |= {"step_s": float("nan"), "samples_s": float("nan"), "peak_gib": "OOM"}
    return row


def table(rows: list[dict[str, object]], device: str) -> str:
    lines = [
        f"Training step on {device}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')} (bf16 autocast on CUDA; random inputs)\n",
        "| model | views | batch | activation checkpointing | step | samples/s | peak memory |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        peak = r["peak_gib"]
        peak_text = peak if isinstance(peak, str) else f"{peak:.1f} GiB"
        lines.append(
            f"| {r['model']} ({r['params_m']:.1f} M) | {r['views']} | {r['batch']} | "
            f"{'on' if r['checkpointing'] else 'off'} | {r['step_s']:.3f} s | "
            f"{r['samples_s']:.2f} | {peak_text} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["small", "medical"])
    parser.add_argument("--views", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.md"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured (see --help).")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = []
    for model in args.models:
        for views in args.views:
            for batch in args.batches:
                # Checkpointing pays where activations are big: the 128^3 config.
                for checkpointing in (False, True) if model == "medical" else (False,):
                    rows.append(
                        measure(
                            SETUPS[model],
                            views,
                            batch,
                            checkpointing,
                            device,
                            args.steps,
                        )
                    )
                    print(rows[-1], flush=True)
                    if device.type == "cuda":  # the last model's memory back
                        torch.cuda.empty_cache()
    text = table(rows, name)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
