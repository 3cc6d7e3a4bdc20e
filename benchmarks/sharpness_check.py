"""PSNR3D, SSIM3D and sharpness (``metrics.hf_energy_ratio``) of trained
models on the test split, network alone and as shipped, with the refinement
each bundle holds, or with one chosen for all (``--tv-weight``):

    python benchmarks/sharpness_check.py A.pt B.pt --data data

Reads the split, truth cubes and DRR sets under ``--data`` (``make run``'s
layers). Prints one JSON line per bundle with the test means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from ct_pipeline.ct import load_ct
from ct_pipeline.datasets import DRRSetDataset
from ct_pipeline.inference import ModelBundle, Refinement, reconstruct
from ct_pipeline.metrics import evaluate_volume, hf_energy_ratio, to_unit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--data", default="data")
    parser.add_argument("--tv-weight", type=float, default=None)
    args = parser.parse_args()
    data = Path(args.data)
    patients = json.loads((data / "05_model_input/patient_split.json").read_text())
    for name in args.bundles:
        bundle = ModelBundle.load(name)
        if args.tv_weight is not None:
            bundle = dataclasses.replace(
                bundle,
                refinement=dataclasses.replace(
                    bundle.refinement, tv_weight=args.tv_weight
                ),
            )
        network = bundle.network()
        scores: dict[str, list[float]] = {}
        for patient in patients["test"]:
            truth = load_ct(data / "03_primary/ct" / f"{patient}.nii.gz")
            drrs = DRRSetDataset(
                filepath=str(data / "04_feature/drr" / f"{patient}.npz")
            ).load()
            alone = dataclasses.replace(bundle, refinement=Refinement())
            for label, used in (("network", alone), ("shipped", bundle)):
                volume = reconstruct(network, used, drrs)
                pred = to_unit(volume.hu, bundle.hu_window)
                true = to_unit(truth.hu, bundle.hu_window)
                metrics = evaluate_volume(pred, true, truth.hu, bundle.hu_window)
                for key in ("psnr_3d", "ssim_3d"):
                    scores.setdefault(f"{label}/{key}", []).append(metrics[key])
                scores.setdefault(f"{label}/hf_energy_ratio", []).append(
                    hf_energy_ratio(pred, true)
                )
        row = {
            "bundle": name,
            "views": bundle.num_views,
            "patients": len(patients["test"]),
        }
        row |= {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
