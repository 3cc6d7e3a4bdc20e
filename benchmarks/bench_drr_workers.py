"""Wall time of ``kedro run --pipelines drr`` with 1 worker process against
more, on N phantoms, each in a fresh copy of the project; the files written
are compared, and must be identical.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_drr_workers.py \
        [--patients 6] [--workers 1 2] [--size 32]
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
LAYERS = ("03_primary/ct", "04_feature/drr", "08_reporting/drr_previews")


def project(root: Path, patients: int, size: int) -> Path:
    """A copy of conf/base with N phantoms of ``size``^3 voxels at 12 mm."""
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf/base", root / "conf/base")
    (root / "conf/local").mkdir()
    (root / "src").mkdir()
    params: dict[str, dict] = {}
    for file in sorted((root / "conf/base").glob("parameters*.yml")):
        params |= yaml.safe_load(file.read_text())
    params["phantoms"] |= {"count": patients, "size_vox": 2 * size, "spacing_mm": 6.0}
    params["preprocess"] |= {"volume_size": size, "target_spacing_mm": 384.0 / size}
    (root / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    return root


def files(data: Path) -> dict[str, str]:
    """The data set's files by content (the PNG previews hold no timestamp)."""
    found = {}
    for layer in LAYERS:
        for file in sorted((data / layer).glob("*")):
            if file.is_file() and not file.name.startswith("."):
                found[f"{layer}/{file.name}"] = _content(file)
    return found


def _content(file: Path) -> str:
    if file.name.endswith(".nii.gz"):  # gzip stamps the time: compare voxels
        import nibabel as nib

        return hashlib.sha256(nib.load(file).get_fdata().tobytes()).hexdigest()
    return hashlib.sha256(file.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    env = os.environ | {
        "KEDRO_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO / "src"),
    }
    kedro = Path(sys.executable).with_name("kedro")
    results, outputs = [], []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            root = project(Path(tmp), args.patients, args.size)
            start = time.perf_counter()
            subprocess.run(
                [
                    kedro,
                    "run",
                    "--pipelines",
                    "drr",
                    "--params",
                    f"drr.workers={workers}",
                ],
                cwd=root,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - start
            outputs.append(files(root / "data"))
        results.append({"workers": workers, "seconds": round(seconds, 1)})
        print(json.dumps(results[-1]), flush=True)
    identical = all(out == outputs[0] for out in outputs)
    print(
        json.dumps(
            {
                "patients": args.patients,
                "volume_size": args.size,
                "cpus": os.cpu_count(),
                "identical_files": identical,
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
