"""Peak memory per training rank against the number of patients.

Writes N synthetic patients to files (a 128^3 float32 CT at 3 mm and 8 views
of 256^2 each, about 10 MB a patient, as the catalogue holds them), then
trains the ``tiny`` model for a fixed number of steps with 2 gloo ranks, the
ranks reading patients through loaders as the train node gives them. Reports
the largest rank's peak resident set size. ``--in-memory`` hands the ranks
the arrays instead (what the train node did before: every rank held the
whole data set). The content is random: memory does not depend on it.

    .venv/bin/python benchmarks/bench_memory.py --patients 20 200 --out benchmarks/results/memory.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ct_pipeline.ct.io import load_ct, save_ct
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.training import TrainConfig, train_model

VAL = 2


def write_patients(folder: Path, n: int, size: int, spacing: float, px: int) -> None:
    rng = np.random.default_rng(0)
    cone = Geometry()
    # The detector covers the cube with a 5 % margin (pixel x px x sad/sdd >= field).
    pixel_mm = size * spacing / px * cone.sdd_mm / cone.sad_mm * 1.05
    geometry = Geometry(detector_px=(px, px), pixel_mm=pixel_mm)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (size - 1) / 2
    angles = np.asarray(default_angles(8))
    for i in tqdm(range(n), desc="write patients"):
        hu = rng.uniform(-1000, 1000, size=(size,) * 3).astype(np.float32)
        volume = CTVolume(hu, affine)
        save_ct(volume, folder / f"p{i:04d}.nii")
        views = rng.uniform(0, 8, size=(8, px, px)).astype(np.float32)
        DRRSetDataset(str(folder / f"p{i:04d}.npz")).save(
            DRRSet(views, angles, geometry, volume.centre_mm)
        )


def loaders(folder: Path, ids: list[str], in_memory: bool) -> tuple[dict, dict]:
    volumes: dict[str, Any] = {p: partial(load_ct, folder / f"{p}.nii") for p in ids}
    drr_sets: dict[str, Any] = {
        p: DRRSetDataset(str(folder / f"{p}.npz")).load for p in ids
    }
    if in_memory:
        volumes = {p: load() for p, load in volumes.items()}
        drr_sets = {p: load() for p, load in drr_sets.items()}
    return volumes, drr_sets


def measure(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    folder = root / f"n{n}"
    folder.mkdir()
    write_patients(folder, n, args.size, args.spacing, args.px)
    ids = [f"p{i:04d}" for i in range(n)]
    split = {"train": ids[VAL:], "val": ids[:VAL], "test": []}
    # The same number of steps whatever the number of patients.
    steps_per_epoch = min(args.steps, (n - VAL) // 2)
    config = TrainConfig(
        model="tiny",
        num_views=8,
        batch_size_per_device=1,
        world_size=2,
        device="cpu",
        epochs=math.ceil(args.steps / steps_per_epoch),
        warmup_epochs=0.0,
        steps_per_epoch=steps_per_epoch,
        num_workers=args.workers,
        checkpoint_dir=str(root / f"checkpoints{n}"),
    )
    started = time.perf_counter()
    result = train_model(*loaders(folder, ids, args.in_memory), split, config)
    return {
        "patients": n,
        "data_gb": sum(f.stat().st_size for f in folder.iterdir()) / 1e9,
        "mode": "arrays in memory" if args.in_memory else "loaders (files)",
        "steps": args.steps,
        "peak_rank_mb": result.history[-1]["peak_memory_mb"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--px", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for n in args.patients:
            rows.append(measure(n, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    header = (
        f"`tiny`, {args.size}^3 at {args.spacing} mm, 8 views of {args.px}^2, "
        f"2 gloo ranks x batch 1, {args.steps} steps, {args.workers} loader workers; "
        f"{platform.machine()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}\n\n"
        "| patients | data on disk | ranks get | peak RSS, largest rank | wall |\n"
        "|---:|---:|---|---:|---:|\n"
    )
    table = header + "".join(
        f"| {r['patients']} | {r['data_gb']:.2f} GB | {r['mode']} | "
        f"{r['peak_rank_mb']:.0f} MB | {r['wall_s']:.0f} s |\n"
        for r in rows
    )
    print(table)
    if args.out:
        with args.out.open("a") as out:
            out.write(table + "\n")


if __name__ == "__main__":
    main()
