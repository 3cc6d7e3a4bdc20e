"""The drr stage's worker pool and incremental rerun, timed end to end.

(a) ``kedro run --pipelines drr`` on N CTs with each ``drr.workers`` given
(1 and 2 by default), each in a fresh copy of the project, timed; the files
written must be identical. (b) In the copy with the most workers, one new CT
is added and the stage rerun: its time relative to the full run, and how many
patients it rendered (DRR files not carried over from the run before).

The CTs are chest phantoms saved into ``data/01_raw`` (made once, outside
the timing, and reused from ``--cache``), ``--size`` voxels a side at
384 / size mm, so the cube is the same ``--size``.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_drr_workers.py \\
        --patients 24 --size 128 [--workers 1 2] [--views 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIELD_MM = 384.0
# What the stage writes; a part of a shard lies elsewhere (never made here).
WRITTEN = ("03_primary", "04_feature", "08_reporting")
VIEWS = "04_feature/drr"


def make_raw_cts(cache: Path, patients: int, size: int) -> list[Path]:
    """Phantoms 0 .. patients - 1 as NIfTI files, made once per size."""
    from ct_pipeline.ct.io import save_ct
    from ct_pipeline.phantoms import chest_phantom

    folder = cache / f"raw_{size}"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for seed in range(patients):
        path = folder / f"ct_{seed:04d}.nii.gz"
        if not path.exists():  # save_ct writes atomically: never half a file
            save_ct(chest_phantom(seed, size, FIELD_MM / size), path)
        files.append(path)
    return files


def project(root: Path, raw: list[Path], size: int, views: int | None) -> Path:
    """A copy of the project's conf/base whose cube is ``size``^3 voxels,
    with ``raw`` (hard links) in data/01_raw."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf/base", root / "conf/base")
    (root / "conf/local").mkdir()
    (root / "src").mkdir()
    (root / "data/01_raw").mkdir(parents=True)
    for file in raw:
        add_ct(root, file)
    params: dict[str, dict] = {}
    for file in sorted((root / "conf/base").glob("parameters*.yml")):
        params |= yaml.safe_load(file.read_text())
    params["preprocess"] |= {"volume_size": size, "target_spacing_mm": FIELD_MM / size}
    if views is not None:
        params["drr"] |= {"num_views": views}
    (root / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    return root


def add_ct(root: Path, file: Path) -> None:
    os.link(file, root / "data/01_raw" / file.name)


def run_drr(root: Path, workers: int) -> float:
    """Seconds of ``kedro run --pipelines drr --params drr.workers=N``."""
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO / "src")}
    command = [Path(sys.executable).with_name("kedro"), "run", "--pipelines", "drr"]
    start = time.perf_counter()
    subprocess.run(
        [*command, "--params", f"drr.workers={workers}"],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def files(data: Path) -> dict[str, str]:
    """Every file the stage wrote (stamps and manifest included), by content."""
    return {
        str(f.relative_to(data)): hashlib.sha256(f.read_bytes()).hexdigest()
        for layer in WRITTEN
        for f in sorted((data / layer).rglob("*"))
        if f.is_file() and not f.name.endswith(".lock")
    }


def view_inodes(data: Path) -> dict[str, int]:
    """Each patient's DRR file's inode: a rerun links a kept patient's file."""
    return {f.name: f.stat().st_ino for f in (data / VIEWS).glob("*.npz")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="cube side, voxels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--views", type=int, default=None, help="default: conf's")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench_drr_workers",
        help="where the raw CTs are kept between runs",
    )
    args = parser.parse_args()
    raw = make_raw_cts(args.cache, args.patients + 1, args.size)
    runs, outputs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            root = project(Path(tmp) / f"w{workers}", raw[:-1], args.size, args.views)
            seconds = run_drr(root, workers)
            outputs.append(files(root / "data"))
            runs.append({"workers": workers, "seconds": round(seconds, 1)})
            print(json.dumps(runs[-1]), flush=True)
        # (b) one new CT among the others, in the last project.
        before = view_inodes(root / "data")
        add_ct(root, raw[-1])
        rerun = run_drr(root, workers)
        after = view_inodes(root / "data")
    serial = next((r["seconds"] for r in runs if r["workers"] == 1), None)
    print(
        json.dumps(
            {
                "patients": args.patients,
                "volume_size": args.size,
                "cpus": os.cpu_count(),
                "identical_files": all(out == outputs[0] for out in outputs),
                "runs": runs,
                "speedup": {r["workers"]: round(serial / r["seconds"], 2) for r in runs}
                if serial
                else None,
                # A patient's own cost: the full run's less the rerun's
                # (start-up, fingerprints and one patient).
                "seconds_per_patient_1_worker": round(
                    (serial - rerun) / max(args.patients - 1, 1), 2
                )
                if serial
                else None,
                "rerun_one_new": {
                    "workers": workers,
                    "seconds": round(rerun, 1),
                    "fraction_of_full_run": round(rerun / seconds, 3),
                    "rendered": sum(after[p] != before.get(p) for p in after),
                    "patients": len(after),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
