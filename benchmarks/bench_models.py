"""Parameters, training-step time and peak memory of every model config on CPU.

Each config runs in its own subprocess so that ru_maxrss (peak resident set)
belongs to that config alone. A step = forward + six-term loss + backward +
AdamW update at batch 2 with 4 views on the demo grid (32^3 at 12 mm, 64 x 64
detector). "medical" is built for 128^3 to count its parameters (on the meta
device, no memory), but timed at the demo grid: a 128^3 CPU step does not fit
this machine's budget. Writes the table into benchmarks/results/models.md.

    .venv/bin/python benchmarks/bench_models.py [--threads 2] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONFIG_NAMES = ["tiny", "unet_tiny", "small", "unet_small", "medical", "unet_medical"]
FULL_SIZE = {"tiny": 32, "small": 32, "medical": 128}


def measure(name: str, threads: int, steps: int) -> dict[str, object]:
    """One config, in this process: parameters, median step time, peak RSS."""
    import torch

    from ct_pipeline.ct import CubeGrid
    from ct_pipeline.drr.geometry import Geometry, default_angles
    from ct_pipeline.losses import ReconstructionLoss
    from ct_pipeline.models import build_model, count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = name.removeprefix("unet_")
    full = FULL_SIZE[base]
    with torch.device("meta"):
        detector = (64, 64) if full == 32 else (128, 128)
        params = count_parameters(
            build_model(
                name, Geometry(detector_px=detector), CubeGrid(full, 384 / full), 4
            )
        )
    size, geometry = 32, Geometry()
    model = build_model(name, geometry, CubeGrid(size, 384 / size), 4)
    loss_fn = ReconstructionLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    views = torch.rand(2, 4, *geometry.detector_px) * 6
    angles = torch.tensor(default_angles(4))
    target = torch.rand(2, 1, size, size, size)
    times = []
    for _ in range(steps + 1):  # the first step builds the lifting grids: not timed
        start = time.perf_counter()
        total, _ = loss_fn(model(views, angles), target)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return {
        "name": name,
        "parameters": params,
        "params_at": f"{full}^3",
        "timed_at": f"{size}^3",
        "step_s": times[len(times) // 2],
        "best_step_s": times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def baseline_rss_mb() -> float:
    """Peak RSS of a process that only imports torch and the models."""
    code = (
        "import resource, torch, ct_pipeline.models, ct_pipeline.losses;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    return float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--one", help=argparse.SUPPRESS
    )  # child mode: one config, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.threads, args.steps)))
        return

    rows = []
    for name in CONFIG_NAMES:
        steps = args.steps if not name.endswith("medical") else 1
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(
            [*command, "--steps", str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        f"## Model configs on CPU ({args.threads} threads, batch 2, 4 views, 64 x 64 detector)",
        "",
        "Step = forward + six-term loss + backward + AdamW, median of timed steps;",
        "peak RSS of a subprocess per config (imports alone: "
        f"{baseline_rss_mb():.0f} MB). Parameters counted at the config's full grid;",
        "time and memory at 32^3 (medical's 128^3 does not fit a CPU budget).",
        f"Load average when done: {os.getloadavg()[0]:.1f} (the cores are shared;",
        "a load above the thread count inflates the times).",
        "",
        "| config | parameters | params at | timed at | step (s) | best step (s) | peak RSS (MB) |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['parameters']:,} | {r['params_at']} | {r['timed_at']} | "
            f"{r['step_s']:.3f} | {r['best_step_s']:.3f} | {r['peak_rss_mb']:.0f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "models_bench.md").write_text("\n".join(lines) + "\n")
    write_report()


def write_report() -> None:
    """benchmarks/results/models.md = the config table + the overfit proof."""
    parts = [
        (RESULTS / part).read_text()
        for part in ("models_bench.md", "overfit_tiny.md")
        if (RESULTS / part).exists()
    ]
    (RESULTS / "models.md").write_text("# Models: benchmarks\n\n" + "\n".join(parts))


if __name__ == "__main__":
    main()
