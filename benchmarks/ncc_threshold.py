"""Where ``predict``'s warning thresholds on the reprojection NCC should sit
(``LOW_NCC`` on the volume as shipped, ``LOW_NETWORK_NCC`` on the network's
own volume): reprojection NCC and PSNR, and the true PSNR3D, of the test
phantoms' reconstructions from good inputs and from inputs that should be
flagged, each written as DICOM DX films and read back as ``predict`` reads them.

    python benchmarks/ncc_threshold.py /tmp/final_2v.pt /tmp/final_8v.pt
        --split data/05_model_input/patient_split.json
        --drr-dir data/04_feature/drr --truth-dir data/03_primary/ct
        --out benchmarks/results/radiographs --refined-patients 8 4

Inputs per test patient (views at the model's angles; the stored ``.npz``
DRRs unless said):

(a) clean: the ``.npz`` itself; the same views as films;
(b) realistic films: quantum noise at a chest-film dose and detector blur;
    another source distance (the truth cube rendered at 1300 / 1800 mm);
    both with a scatter halo (0.5) taken out as ``predict`` does by default
    (estimated);
(c) to be flagged: the PA and lateral films' angles swapped; the PA film
    mirrored left-right; pixel spacing stated 20 % too large or too small;
    a halo left in (0.5 / 72 mm, and 0.8 / 90 mm); the lateral of the next
    test patient; a head (a skull-like shell) instead of a chest; smooth
    random garbage.

Each is reconstructed by the network alone (every patient) and as shipped,
with the bundle's refinement (the first ``--refined-patients`` patients: the
refinement dominates the time); ``predict`` warns when either NCC is low.
Scatter is taken out only in (b)'s halo case (estimated): elsewhere none.
Writes ``ncc_threshold.jsonl`` and ``ncc_threshold.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from ct_pipeline.ct import CTVolume, CubeGrid, load_ct
from ct_pipeline.datasets import DRRSetDataset
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.inference import (
    ModelBundle,
    Refinement,
    reconstruct,
    reprojection_scores,
    views_from_films,
)
from ct_pipeline.pipelines.predict.nodes import LOW_NCC, LOW_NETWORK_NCC
from ct_pipeline.radiographs import (
    NO_SCATTER,
    level_films,
    read_films,
    write_dicom_film,
)
from ct_pipeline.scatter_estimate import estimate_scatter
from radiograph_check import effects, film_geometries, psnr  # sibling script

PA, LATERAL = 0.0, 90.0
SPACING_ERROR = 1.2


@dataclasses.dataclass(frozen=True)
class Case:
    """Films of one patient: views (V, H, W) on ``geometry`` labelled with
    ``angles``; ``estimate``: the halo estimated and taken out."""

    group: str
    views: np.ndarray
    geometry: Geometry
    angles: tuple[float, ...]
    estimate: bool = False


def head(grid: CubeGrid) -> CTVolume:
    """A skull-like shell (bone 7 mm thick, radius 95 mm) around brain."""
    axis = grid.axis_mm()
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + y**2 + (z / 1.1) ** 2)
    hu = np.full((grid.size,) * 3, -1000.0, dtype=np.float32)
    hu[r <= 95] = 1000.0
    hu[r <= 88] = 40.0
    return CTVolume(hu=hu, affine=grid.affine)


def cases(
    bundle: ModelBundle,
    views: np.ndarray,
    truth: CTVolume,
    other: np.ndarray,
    mu: float,
    seed: int,
) -> dict[str, Case]:
    model = bundle.geometry
    angles = tuple(bundle.angles_deg)
    pa, lateral = angles.index(PA), angles.index(LATERAL)
    distant = film_geometries(model)["source_distance"]
    on_model = effects(model, seed)
    far = effects(distant, seed)
    rendered_far = render_drrs(truth, distant, list(angles), mu)

    def replaced(index: int, image: np.ndarray) -> np.ndarray:
        out = views.copy()
        out[index] = image
        return out

    swapped = list(angles)
    swapped[pa], swapped[lateral] = LATERAL, PA
    rng = np.random.default_rng(seed)
    garbage = gaussian_filter(rng.random(views.shape), (0, 3, 3))
    # Its lowest 5 % made 0: an open field for the calibration to find.
    garbage = np.maximum(garbage - np.quantile(garbage, 0.05), 0)
    garbage *= views.max() / garbage.max()

    def wrong(v: np.ndarray, g: Geometry = model) -> Case:
        return Case("c", v, g, angles)

    return {
        "clean films": Case("a", views, model, angles),
        "noise + blur": Case(
            "b", on_model["noise"](on_model["blur"](views)), model, angles
        ),
        "source 1300 / 1800 mm": Case("b", rendered_far, distant, angles),
        "all + halo 0.5, estimated": Case(
            "b", far["all_detector"](rendered_far), distant, angles, estimate=True
        ),
        "PA and lateral swapped": Case("c", views, model, tuple(swapped)),
        "PA mirrored left-right": wrong(replaced(pa, views[pa][:, ::-1])),
        "pixel spacing x1.2": wrong(
            views, dataclasses.replace(model, pixel_mm=model.pixel_mm * SPACING_ERROR)
        ),
        "pixel spacing /1.2": wrong(
            views, dataclasses.replace(model, pixel_mm=model.pixel_mm / SPACING_ERROR)
        ),
        "halo 0.5 left in": wrong(on_model["scatter"](views)),
        "halo 0.8 / 90 mm left in": wrong(on_model["other_halo"](views)),
        "lateral of another patient": wrong(replaced(lateral, other[lateral])),
        "a head, not a chest": wrong(
            render_drrs(head(CubeGrid.of(truth)), model, list(angles), mu)
        ),
        "smooth random garbage": wrong(garbage.astype(np.float32)),
    }


def score(
    row: dict[str, Any],
    label: str,
    network: torch.nn.Module,
    used: dict[str, ModelBundle],
    views: DRRSet,
    truth: CTVolume,
) -> None:
    for how, bundle in used.items():
        volume = reconstruct(network, bundle, views)
        scores = reprojection_scores(volume, views)
        row[f"{label}/{how}/ncc"] = scores["reprojection/ncc"]
        row[f"{label}/{how}/psnr"] = scores["reprojection/psnr"]
        row[f"{label}/{how}/psnr_3d"] = psnr(volume, truth, bundle.hu_window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--split", required=True)
    parser.add_argument("--drr-dir", required=True)
    parser.add_argument("--truth-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--refined-patients",
        type=int,
        nargs="+",
        default=[8],
        help="per bundle: how many patients are also reconstructed as shipped",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    patients = json.loads(Path(args.split).read_text())["test"]
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for name, refined in zip(args.bundles, args.refined_patients, strict=True):
        bundle = ModelBundle.load(name)
        network = bundle.network()
        alone = dataclasses.replace(bundle, refinement=Refinement())

        def drrs(patient: str) -> DRRSet:
            return DRRSetDataset(
                filepath=str(Path(args.drr_dir) / f"{patient}.npz")
            ).load()

        for index, patient in enumerate(patients):
            used = {"network": alone}
            if index < refined:
                used["shipped"] = bundle
            truth = load_ct(Path(args.truth_dir) / f"{patient}.nii.gz")
            stored = drrs(patient)
            mu = stored.mu_water_per_mm
            views = stored.select(bundle.angles_deg)
            other = drrs(patients[(index + 1) % len(patients)])
            row: dict[str, Any] = {"bundle": name, "patient": patient}
            score(row, "a/.npz DRRs", network, used, views, truth)
            with tempfile.TemporaryDirectory() as tmp:
                for number, (label, case) in enumerate(
                    cases(
                        bundle,
                        views.projections,
                        truth,
                        other.select(bundle.angles_deg).projections,
                        mu,
                        index,
                    ).items()
                ):
                    folder = Path(tmp) / str(number)
                    folder.mkdir()
                    paths = [
                        write_dicom_film(folder / f"{i}.dcm", p, angle, case.geometry)
                        for i, (p, angle) in enumerate(
                            zip(case.views, case.angles, strict=True)
                        )
                    ]
                    films = read_films(paths)
                    halo = (
                        estimate_scatter(
                            network,
                            bundle,
                            level_films(films, bundle.geometry, bundle.angles_deg),
                            mu,
                        )[0]
                        if case.estimate
                        else NO_SCATTER
                    )
                    views = views_from_films(bundle, films, mu, halo)
                    score(row, f"{case.group}/{label}", network, used, views, truth)
            rows.append(row)
            print(json.dumps(row), flush=True)
    with (out / "ncc_threshold.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "ncc_threshold.md").write_text(report(rows))


def _summary(values: list[float]) -> str:
    return f"{min(values):.4f} / {np.mean(values):.4f} / {max(values):.4f}"


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Reprojection NCC: good inputs against inputs to flag",
        "",
        f"Measured {date.today()} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, CPU, 1 thread) by "
        "`benchmarks/ncc_threshold.py`. Films written as DICOM DX and read "
        "back as `predict` reads them. NCC as min / mean / max over the "
        "patients; PSNR in dB (reprojection: against the input views; 3D: "
        "against the truth cube, meaningless for the head and garbage); "
        "warned: patients (of those also shipped) that `predict` warns about, "
        f"NCC as shipped < LOW_NCC = {LOW_NCC} or network alone < "
        f"LOW_NETWORK_NCC = {LOW_NETWORK_NCC}; network low: patients whose "
        "network alone has NCC < LOW_NETWORK_NCC.",
        "",
    ]
    groups = {"a": "clean", "b": "realistic films", "c": "should be flagged"}
    for name in dict.fromkeys(r["bundle"] for r in rows):
        mine = [r for r in rows if r["bundle"] == name]
        shipped = [r for r in mine if any(k.endswith("/shipped/ncc") for k in r)]
        labels = [
            k.removesuffix("/network/ncc")
            for k in mine[0]
            if k.endswith("/network/ncc")
        ]
        lines += [
            f"## {Path(name).name}: {len(mine)} patients "
            f"({len(shipped)} also as shipped, refined)",
            "",
            "| group | input | NCC as shipped | warned | reprojection PSNR as shipped "
            "| PSNR3D as shipped | NCC network alone | network low "
            "| PSNR3D network alone |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label in labels:
            group, case = label.split("/", 1)

            def column(
                how: str, metric: str, rows: list[dict[str, Any]]
            ) -> list[float]:
                return [r[f"{label}/{how}/{metric}"] for r in rows]  # noqa: B023

            ncc = column("shipped", "ncc", shipped)
            warned = sum(
                s < LOW_NCC or n < LOW_NETWORK_NCC
                for s, n in zip(ncc, column("network", "ncc", shipped), strict=True)
            )
            network = column("network", "ncc", mine)
            lines.append(
                f"| {groups[group]} | {case} | {_summary(ncc)} | "
                f"{warned} / {len(ncc)} | "
                f"{np.mean(column('shipped', 'psnr', shipped)):.2f} | "
                f"{np.mean(column('shipped', 'psnr_3d', shipped)):.2f} | "
                f"{_summary(network)} | "
                f"{sum(v < LOW_NETWORK_NCC for v in network)} / {len(network)} | "
                f"{np.mean(column('network', 'psnr_3d', mine)):.2f} |"
            )
        lines += [
            "",
            "Spearman's rank correlation across the patients, clean `.npz` DRRs:",
            "",
        ]
        for how, used in (("network", mine), ("shipped", shipped)):
            truth = [r[f"a/.npz DRRs/{how}/psnr_3d"] for r in used]
            rho = {
                metric: spearmanr(
                    [r[f"a/.npz DRRs/{how}/{metric}"] for r in used], truth
                )[0]
                for metric in ("ncc", "psnr")
            }
            lines.append(
                f"- {how} ({len(used)} patients): reprojection NCC vs PSNR3D "
                f"{rho['ncc']:+.2f}, reprojection PSNR vs PSNR3D {rho['psnr']:+.2f}"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
