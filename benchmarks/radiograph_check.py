"""Issue 20's Goal, measured on a trained model and the test split: films
through the radiograph readers and calibration that ``predict`` uses.

    python benchmarks/radiograph_check.py BUNDLE_2V.pt [BUNDLE_8V.pt ...]
        --split data/05_model_input/patient_split.json
        --drr-dir data/04_feature/drr --truth-dir data/03_primary/ct
        --source-dir data/02_intermediate/phantoms
        --out benchmarks/results/radiographs

e.g. BUNDLE_2V.pt = /tmp/final_2v.pt. For every test patient:

(a) round trip (bundles whose views are PA and left lateral): the patient's
    views rendered at a film geometry other than the model's (finer pixels, a
    larger matrix), written as DICOM DX (12-bit intensity, MONOCHROME1 with
    sign +1 and MONOCHROME2 with sign -1, PatientOrientation set, the second
    turned as a viewer shows it) and as a 16-bit PNG + sidecar, read back and
    reconstructed; PSNR3D against the reconstruction from the stored ``.npz``;
(b) realistic films: DICOM films with one acquisition effect each (quantum
    noise at a chest-film dose, blur, scatter: ``training.detector``'s
    ``detector_response``; a film 10 % larger; another source distance) and
    all together, PSNR3D lost against the ``.npz``; the scatter taken out
    (the halo given, or estimated) alone, beside each other effect
    (``films/scatter+...``) and with all;
(c) every bundle: Spearman's rank correlation across the patients between
    the reprojection scores (no truth) and the true PSNR3D, for the network
    alone and as shipped.

Views are rendered as the DRR pipeline renders them (``views_of_finer_anatomy``
from the patient's source CT, ``--oversample`` times finer than the cube).
``--figure-patient ID`` also draws ``ID.png``: ``predict``'s figure of that
patient's MONOCHROME2 films. ``--only`` (label prefixes) and ``--patients``
(the first N) restrict a run while iterating. Writes ``results.jsonl`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ct_pipeline.ct import CTVolume, CubeGrid, load_ct
from ct_pipeline.datasets import DRRSetDataset
from ct_pipeline.drr import Geometry
from ct_pipeline.drr.anatomy import views_of_finer_anatomy
from ct_pipeline.evaluation.figures import radiograph_figure
from ct_pipeline.inference import (
    ModelBundle,
    Refinement,
    reconstruct,
    reproject,
    reprojection_scores,
    views_from_films,
)
from ct_pipeline.metrics import evaluate_volume, to_unit
from ct_pipeline.radiographs import ScatterModel, level_films, read_films
from ct_pipeline.radiographs.writing import dicom_film, write_image_film
from ct_pipeline.scatter_estimate import estimate_scatter
from ct_pipeline.training.detector import SCATTER_SIGMA_PX, detector_response

PA, LATERAL = 0.0, 90.0
# The views turned as a viewer shows them (DICOM writes them so).
TURNED = {PA: ("R", "H"), LATERAL: ("A", "F")}
# Detected photons per mm^2 of a chest film: about 2.5 uGy at the detector
# times 3e4 photons / (mm^2 uGy) (IEC 62220-1 beam qualities) times a DQE of
# about 0.7.
CHEST_PHOTONS_PER_MM2 = 5e4
BLUR_PX = 0.5  # Gaussian sigma on the film, pixels
SCATTER = 0.5  # scatter-to-primary ratio, a chest film with an anti-scatter grid
OTHER_HALO = (0.8, 10.0)  # scatter-to-primary ratio, sigma in pixels


def film_geometries(model: Geometry) -> dict[str, Geometry]:
    """(a)'s film (half the pixel, a larger matrix) and (b)'s larger film and
    other source distance (a chest stand's 1800 mm)."""
    rows, cols = model.detector_px
    return {
        "round_trip": dataclasses.replace(
            model, detector_px=(2 * rows + 8, 2 * cols + 4), pixel_mm=model.pixel_mm / 2
        ),
        "model": model,
        "larger_film": dataclasses.replace(
            model, detector_px=(round(1.1 * rows), round(1.1 * cols))
        ),
        "source_distance": dataclasses.replace(model, sdd_mm=1800.0, sad_mm=1300.0),
    }


def write_films(
    folder: Path,
    views: np.ndarray,
    angles: tuple[float, ...],
    geometry: Geometry,
    kind: str,
) -> list[Path]:
    """One file per view: ``kind`` dx_mono1 (sign +1), dx_mono2 (sign -1,
    turned for display) or png."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for p, angle in zip(views, angles, strict=True):
        if kind == "png":
            paths.append(
                write_image_film(folder / f"{angle:g}.png", p, angle, geometry)
            )
            continue
        mono1 = kind == "dx_mono1"
        path = folder / f"{angle:g}.dcm"
        dicom_film(
            p,
            angle,
            geometry,
            orientation=None if mono1 else TURNED[angle],
            photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
            sign=1 if mono1 else -1,
        ).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def effects(
    geometry: Geometry, seed: int
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """(b)'s acquisition effects on (V, H, W) line integrals of ``geometry``."""
    photons = CHEST_PHOTONS_PER_MM2 * geometry.pixel_mm**2

    def response(
        scatter: float, blur: float, counted: bool, sigma_px: float = SCATTER_SIGMA_PX
    ) -> Callable[..., Any]:
        def apply(views: np.ndarray) -> np.ndarray:
            n = views.shape[0]
            return detector_response(
                torch.from_numpy(views),
                torch.full((n,), scatter),
                torch.full((n,), blur),
                # The exposure keeps the open field, scatter added, under the
                # detector's full scale, as a real one is set.
                torch.full((n,), 1.0 + scatter),
                torch.full((n,), photons) if counted else None,
                torch.Generator().manual_seed(seed),
                sigma_px,
            ).numpy()

        return apply

    return {
        "noise": response(0.0, 0.0, True),
        "blur": response(0.0, BLUR_PX, False),
        "scatter": response(SCATTER, 0.0, False),
        "scatter_noise": response(SCATTER, 0.0, True),
        "scatter_blur": response(SCATTER, BLUR_PX, False),
        "all_detector": response(SCATTER, BLUR_PX, True),
        # A stronger, wider halo than any the estimate tries exactly.
        "other_halo": response(OTHER_HALO[0], 0.0, False, OTHER_HALO[1]),
    }


def psnr(volume: CTVolume, truth: CTVolume, window: tuple[float, float]) -> float:
    return evaluate_volume(
        to_unit(volume.hu, window), to_unit(truth.hu, window), truth.hu, window
    )["psnr_3d"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--split", required=True)
    parser.add_argument("--drr-dir", required=True)
    parser.add_argument("--truth-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--figure-patient", default=None)
    parser.add_argument(
        "--only",
        default="",
        help="run only the film cases whose label starts with one of these "
        "|-separated prefixes",
    )
    parser.add_argument(
        "--patients",
        type=int,
        default=None,
        help="only the first this many test patients (to iterate quickly)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    patients = json.loads(Path(args.split).read_text())["test"][: args.patients]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in args.bundles:
        bundle = ModelBundle.load(name)
        network = bundle.network()
        alone = dataclasses.replace(bundle, refinement=Refinement())
        films_ok = set(bundle.angles_deg) == {PA, LATERAL}
        geometries = film_geometries(bundle.geometry)
        for index, patient in enumerate(patients):
            truth = load_ct(Path(args.truth_dir) / f"{patient}.nii.gz")
            drrs = DRRSetDataset(
                filepath=str(Path(args.drr_dir) / f"{patient}.npz")
            ).load()
            mu = drrs.mu_water_per_mm
            views = drrs.select(bundle.angles_deg)
            row: dict[str, Any] = {"bundle": name, "views": bundle.num_views}
            row["patient"] = patient
            for label, used in (("network", alone), ("shipped", bundle)):
                volume = reconstruct(network, used, drrs)
                row[f"{label}/psnr_3d"] = psnr(volume, truth, bundle.hu_window)
                scores = reprojection_scores(volume, views)
                row[f"{label}/reprojection_ncc"] = scores["reprojection/ncc"]
                row[f"{label}/reprojection_psnr"] = scores["reprojection/psnr"]
            if films_ok:
                source = load_ct(Path(args.source_dir) / f"{patient}.nii.gz")

                cube = CubeGrid.of(truth)

                def render(
                    geometry: Geometry,
                    source: CTVolume = source,
                    cube: CubeGrid = cube,
                    angles: tuple[float, ...] = bundle.angles_deg,
                    mu: float = mu,
                ) -> np.ndarray:
                    return views_of_finer_anatomy(
                        source, cube, geometry, list(angles), mu, args.oversample
                    ).projections

                cases: list[
                    tuple[str, str, np.ndarray, Geometry, ScatterModel | None]
                ] = []
                none = ScatterModel()
                fine = geometries["round_trip"]
                for kind in ("dx_mono1", "dx_mono2", "png"):
                    cases.append((f"round_trip/{kind}", kind, render(fine), fine, none))
                model_views = render(bundle.geometry)
                cases.append(
                    ("films/clean", "dx_mono1", model_views, bundle.geometry, none)
                )
                model_response = effects(bundle.geometry, index)
                for effect in (
                    "noise",
                    "blur",
                    "scatter",
                    "all_detector",
                    "other_halo",
                ):
                    cases.append(
                        (
                            f"films/{effect}",
                            "dx_mono1",
                            model_response[effect](model_views),
                            bundle.geometry,
                            none,
                        )
                    )
                for what in ("larger_film", "source_distance"):
                    cases.append(
                        (
                            f"films/{what}",
                            "dx_mono1",
                            render(geometries[what]),
                            geometries[what],
                            none,
                        )
                    )
                distant = geometries["source_distance"]
                everything = effects(distant, index)["all_detector"]
                all_views = everything(render(distant))
                cases.append(("films/all", "dx_mono1", all_views, distant, none))
                # The scatter correction given the simulation's halo, then
                # given a halo narrower, wider, weaker or stronger than it.
                scattered = effects(bundle.geometry, index)["scatter"](model_views)
                width = SCATTER_SIGMA_PX * bundle.geometry.pixel_mm
                for suffix, fraction, sigma_mm in (
                    ("", SCATTER, width),
                    (" sigma x0.75", SCATTER, 0.75 * width),
                    (" sigma x1.33", SCATTER, 1.33 * width),
                    (" fraction x0.6", 0.6 * SCATTER, width),
                    (" fraction x1.4", 1.4 * SCATTER, width),
                ):
                    cases.append(
                        (
                            f"films/scatter, corrected{suffix}",
                            "dx_mono1",
                            scattered,
                            bundle.geometry,
                            ScatterModel(fraction, sigma_mm),
                        )
                    )
                # films/all's effects one at a time beside the scatter, its
                # halo taken out as given: which of them spoils the correction.
                for what, film_views, geometry in (
                    (
                        "noise",
                        model_response["scatter_noise"](model_views),
                        bundle.geometry,
                    ),
                    (
                        "blur",
                        model_response["scatter_blur"](model_views),
                        bundle.geometry,
                    ),
                    (
                        "larger_film",
                        effects(geometries["larger_film"], index)["scatter"](
                            render(geometries["larger_film"])
                        ),
                        geometries["larger_film"],
                    ),
                    (
                        "source_distance",
                        effects(distant, index)["scatter"](render(distant)),
                        distant,
                    ),
                ):
                    cases.append(
                        (
                            f"films/scatter+{what}, corrected",
                            "dx_mono1",
                            film_views,
                            geometry,
                            ScatterModel(SCATTER, width),
                        )
                    )
                cases.append(
                    (
                        "films/all, corrected",
                        "dx_mono1",
                        all_views,
                        distant,
                        ScatterModel(SCATTER, width),
                    )
                )
                # The halo estimated (None) from the films alone.
                other = effects(bundle.geometry, index)["other_halo"](model_views)
                cases += [
                    (
                        "films/clean, estimated",
                        "dx_mono1",
                        model_views,
                        bundle.geometry,
                        None,
                    ),
                    (
                        "films/scatter, estimated",
                        "dx_mono1",
                        scattered,
                        bundle.geometry,
                        None,
                    ),
                    ("films/other_halo", "dx_mono1", other, bundle.geometry, none),
                    (
                        "films/other_halo, estimated",
                        "dx_mono1",
                        other,
                        bundle.geometry,
                        None,
                    ),
                    ("films/all, estimated", "dx_mono1", all_views, distant, None),
                ]
                cases = [
                    c for c in cases if c[0].startswith(tuple(args.only.split("|")))
                ]
                with tempfile.TemporaryDirectory() as tmp:
                    for label, kind, film_views, geometry, scatter in cases:
                        paths = write_films(
                            Path(tmp) / label,
                            film_views,
                            bundle.angles_deg,
                            geometry,
                            kind,
                        )
                        films = read_films(paths)
                        if scatter is None:
                            levelled = level_films(
                                films, bundle.geometry, bundle.angles_deg
                            )
                            scatter, _ = estimate_scatter(network, bundle, levelled, mu)
                            row[f"{label}/chosen"] = [
                                scatter.fraction,
                                scatter.sigma_mm,
                            ]
                        from_films = views_from_films(bundle, films, mu, scatter)
                        volume = reconstruct(network, bundle, from_films)
                        row[f"{label}/psnr_3d"] = psnr(volume, truth, bundle.hu_window)
                        if (
                            label == "round_trip/dx_mono2"
                            and patient == args.figure_patient
                        ):
                            figure = radiograph_figure(
                                read_films(paths),
                                from_films.projections,
                                reproject(volume, from_films),
                                list(bundle.angles_deg),
                                volume.hu,
                                title=f"{patient}: DICOM DX films, {bundle.num_views} views",
                            )
                            figure.savefig(out / f"{patient}.png")
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(out, rows)


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    with (out / "results.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    lines = [
        "# Real radiographs: round trip, realistic films, reprojection signal",
        "",
        f"Measured {date.today()} on {platform.node()} ({platform.processor() or platform.machine()}, CPU, 1 thread) by `benchmarks/radiograph_check.py`; "
        "PSNR3D in dB against the truth cube, mean over the test patients.",
        "",
    ]
    for name in dict.fromkeys(r["bundle"] for r in rows):
        mine = [r for r in rows if r["bundle"] == name]
        base = float(np.mean([r["shipped/psnr_3d"] for r in mine]))
        lines += [
            f"## {Path(name).name}: {mine[0]['views']} views, {len(mine)} patients",
            "",
        ]
        film_keys = [
            k
            for k in mine[0]
            if k.startswith(("round_trip/", "films/")) and k.endswith("/psnr_3d")
        ]
        if film_keys:
            lines += [
                "| input | PSNR3D | vs `.npz` | worst patient | halo estimated (fraction / sigma mm: patients) |",
                "|---|---|---|---|---|",
                f"| `.npz` DRRs (as shipped) | {base:.2f} | | | |",
            ]
            for key in film_keys:
                values = np.array([r[key] for r in mine])
                deltas = values - np.array([r["shipped/psnr_3d"] for r in mine])
                case = key.removesuffix("/psnr_3d")
                chosen = Counter(
                    f"{r[case + '/chosen'][0]:g} / {r[case + '/chosen'][1]:g}"
                    for r in mine
                    if case + "/chosen" in r
                )
                lines.append(
                    f"| {case} | {values.mean():.2f} | "
                    f"{deltas.mean():+.2f} | {deltas.min():+.2f} | "
                    + ", ".join(f"{c}: {n}" for c, n in chosen.most_common())
                    + " |"
                )
            lines.append("")
        lines += [
            "| reconstruction | PSNR3D | Spearman(reprojection NCC, PSNR3D) | Spearman(reprojection PSNR, PSNR3D) |",
            "|---|---|---|---|",
        ]
        for label in ("network", "shipped"):
            truth = [r[f"{label}/psnr_3d"] for r in mine]
            rho_ncc = spearmanr([r[f"{label}/reprojection_ncc"] for r in mine], truth)[
                0
            ]
            rho_psnr = spearmanr(
                [r[f"{label}/reprojection_psnr"] for r in mine], truth
            )[0]
            lines.append(
                f"| {label} | {np.mean(truth):.2f} | {rho_ncc:+.2f} | {rho_psnr:+.2f} |"
            )
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
