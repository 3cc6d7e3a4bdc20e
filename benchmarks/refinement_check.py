"""How much the physics refinement gives, and whether it is safe when the
views are not rendered from the cube the model predicts.

    python benchmarks/refinement_check.py --bundle data/06_models/small-2v/best_model.pt --split val

For each patient of the split: the network alone and the network followed by
each refinement, with (a) the data set's views (rendered from the 32^3 cube,
as in training) and (b) views rendered from the finer phantom the cube was
resampled from (data/02_intermediate/phantoms): a stand-in for radiographs of
real anatomy, which our renderer of the cube only approximates. Scores are
PSNR3D against the cube. Prints one JSON line of means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ct_pipeline.ct import load_ct
from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.drr.physics import hu_to_mu
from ct_pipeline.drr.projector import project
from ct_pipeline.inference import ModelBundle, Refinement, refine
from ct_pipeline.metrics import psnr_3d, to_unit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default="data/06_models/small-2v/best_model.pt")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument(
        "--prior-weights", default="0,3,10,30", help="refinements to try (100 steps)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = Path(args.data)
    bundle = ModelBundle.load(args.bundle)
    network = bundle.network()
    refinements = [
        Refinement(100, 0.01, float(w)) for w in args.prior_weights.split(",")
    ]
    split = json.loads((data / "05_model_input/patient_split.json").read_text())
    scores: dict[str, list[float]] = {}
    for patient in sorted(split[args.split]):
        cube = load_ct(data / "03_primary/ct" / f"{patient}.nii.gz")
        fine = load_ct(data / "02_intermediate/phantoms" / f"{patient}.nii.gz")
        views = DRRSetDataset(str(data / "04_feature/drr" / f"{patient}.npz")).load()
        views = views.select(bundle.angles_deg)
        with torch.no_grad():
            from_fine = project(
                hu_to_mu(torch.from_numpy(fine.hu), views.mu_water_per_mm),
                fine.affine,
                views.geometry,
                views.angles_deg,
                views.isocentre_mm,
            ).numpy()
        truth = torch.from_numpy(to_unit(cube.hu, bundle.hu_window))
        for source, drrs in (
            ("cube", views),
            ("fine", dataclasses.replace(views, projections=from_fine)),
        ):
            with torch.no_grad():
                proposal = network(
                    torch.from_numpy(drrs.projections)[None],
                    torch.as_tensor(drrs.angles_deg, dtype=torch.float32),
                )["volume"][0, 0]
            scores.setdefault(f"{source}/network", []).append(psnr_3d(proposal, truth))
            for r in refinements:
                refined = refine(proposal, drrs, cube.affine, r, bundle.hu_window)
                key = f"{source}/refined_prior{r.prior_weight:g}"
                scores.setdefault(key, []).append(psnr_3d(refined, truth))
        scores.setdefault("fine_vs_cube_views_rel", []).append(
            float(
                np.linalg.norm(from_fine - views.projections)
                / np.linalg.norm(views.projections)
            )
        )
    print(
        json.dumps(
            {
                "bundle": args.bundle,
                "model": bundle.model,
                "views": bundle.num_views,
                "split": args.split,
                "patients": len(split[args.split]),
                **{k: round(float(np.mean(v)), 3) for k, v in scores.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
