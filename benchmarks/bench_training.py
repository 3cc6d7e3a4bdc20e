"""Training throughput and peak memory: 1 process vs 2 gloo processes on CPU.

Same global batch in both (1 x B vs 2 x B/2), synthetic patients (training
speed does not depend on the content), the last epoch timed (the first
includes warm-up). Peak memory is rank 0's resident set size (every rank holds
a model copy and the data). Writes a Markdown table to stdout and, with
--out, to a file.

    .venv/bin/python benchmarks/bench_training.py --models tiny small --out benchmarks/results/training.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.training import TrainConfig, train_model


def synthetic_patients(n: int, size: int, geometry: Geometry) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    spacing = 384.0 / size  # the demo's 384 mm field
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (size - 1) / 2
    angles = np.asarray(default_angles(2))
    volumes, drr_sets = {}, {}
    for i in range(n):
        hu = rng.uniform(-1000, 1000, size=(size,) * 3).astype(np.float32)
        volume = CTVolume(hu, affine)
        views = rng.uniform(0, 8, size=(2, *geometry.detector_px)).astype(np.float32)
        volumes[f"p{i:03d}"] = volume
        drr_sets[f"p{i:03d}"] = DRRSet(views, angles, geometry, volume.centre_mm)
    return volumes, drr_sets


def measure(
    model: str, world_size: int, args: argparse.Namespace, data: tuple[dict, dict]
) -> dict:
    ids = sorted(data[0])
    split = {"train": ids[: args.train], "val": ids[args.train :], "test": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model=model,
            batch_size_per_device=args.global_batch // world_size,
            epochs=args.epochs,
            warmup_epochs=0.0,
            world_size=world_size,
            device="cpu",
            checkpoint_dir=tmp,
        )
        started = time.perf_counter()
        result = train_model(*data, split, config)
        wall = time.perf_counter() - started
    last = result.history[-1]
    return {
        "model": model,
        "processes": world_size,
        "samples_per_s": last["train/samples_per_s"],
        "peak_mb": last["peak_memory_mb"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--size", type=int, default=32, help="volume side in voxels")
    parser.add_argument(
        "--detector", type=int, default=64, help="detector side in pixels"
    )
    parser.add_argument("--train", type=int, default=16, help="training patients")
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--one", nargs=2, metavar=("MODEL", "PROCESSES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    geometry = Geometry(
        detector_px=(args.detector, args.detector), pixel_mm=9.0 * 64 / args.detector
    )
    data = synthetic_patients(args.train + 2, args.size, geometry)
    cores = len(os.sched_getaffinity(0))
    if args.one is not None:
        # One process gets every core; each of 2 ranks sets its own share (cores // 2).
        torch.set_num_threads(cores)
        print(json.dumps(measure(args.one[0], int(args.one[1]), args, data)))
        return
    rows, load = [], os.getloadavg()[0]
    for model in args.models:
        for world_size in (1, 2):
            # A fresh interpreter per measurement, so peak RSS is that run's alone.
            command = [sys.executable, __file__, "--one", model, str(world_size)]
            command += [
                "--size",
                str(args.size),
                "--detector",
                str(args.detector),
                "--train",
                str(args.train),
            ]
            command += [
                "--global-batch",
                str(args.global_batch),
                "--epochs",
                str(args.epochs),
            ]
            output = subprocess.run(
                command, check=True, capture_output=True, text=True
            ).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(rows[-1], flush=True)

    lines = [
        f"Training throughput on CPU ({cores} cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, load average at start {load:.1f}, other jobs sharing the cores).",
        f"{args.size}^3 volumes, 2 views of {args.detector}^2, {args.train} training patients, "
        f"global batch {args.global_batch}, full six-term loss, epoch {args.epochs} of {args.epochs} timed.",
        "",
        "| model | processes | samples/s | peak RSS per rank (MB) | wall incl. start-up (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['processes']} | {r['samples_per_s']:.2f} | {r['peak_mb']:.0f} | {r['wall_s']:.1f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
