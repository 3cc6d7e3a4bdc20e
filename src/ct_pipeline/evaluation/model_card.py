"""The model card logged beside each trained model: what it was trained on,
for which views and geometry, how well it measured, and what it is not for.

Written from one tracking run's own parameters, metrics and tags (plain
mappings, as MLflow returns them), so every number in it is that run's.
"""

from __future__ import annotations

from collections.abc import Mapping

CARD_NAME = "MODEL_CARD.md"

# The measured rows: metric prefix -> what was scored.
_SCORED = {
    "test": "the test patients (never seen in training)",
    "baseline_mean": "baseline: the training-mean volume, for scale",
    "realct": "a real chest CT (`evaluate.real_ct`), never seen in training",
}

# data.source -> (the training data, its first limit).
_SOURCES = {
    "phantom": (
        "synthetic chest phantoms, generated procedurally by the pipeline "
        "(no patient data)",
        "Trained and tested on phantoms, which are simpler than real anatomy; "
        "the real-CT row (where present) is a single patient.",
    ),
    "raw": (
        "the CT volumes placed in `data/01_raw` by whoever ran the training",
        "Trained and tested on those CTs only: other scanners, patients or "
        "anatomy may score lower.",
    ),
}


def model_card(
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> str:
    """The card's Markdown for the run with these parameters, metrics and tags."""
    name = tags.get("mlflow.runName", tags.get("ct_pipeline.model", "model"))
    # The evaluation tags the views of the weights kept; without it, the config's.
    views = tags.get("ct_pipeline.num_views") or params["train.num_views"]
    angles = tags.get("ct_pipeline.angles_deg")
    data, data_limit = _SOURCES.get(params["data.source"], (params["data.source"], ""))
    size, spacing = params["data.volume_size"], float(params["data.spacing_mm"])
    detector = params["data.geometry.detector_px"].strip("[]").replace(", ", " x ")
    lines = [
        f"# Model card: {name}",
        "",
        "**Research software, not for clinical use.** It has not been validated "
        "on patients and must not inform any diagnosis or treatment.",
        "",
        "## What it does",
        "",
        f"Reconstructs a CT volume in Hounsfield units ({size}^3 voxels of "
        f"{spacing:g} mm) from {views} X-ray projections of the chest.",
        "",
        "## Training data",
        "",
        f"- {data};",
        "- patients: "
        + ", ".join(
            f"{params[f'data.patients.{split}']} {split}"
            for split in ("train", "val", "test")
            if f"data.patients.{split}" in params
        )
        + " (split by patient).",
        "",
        "## Views and geometry",
        "",
        f"- {views} views" + (f" at {angles} degrees" if angles else "") + ";",
        f"- {params['data.geometry.beam']} beam, source to isocentre "
        f"{float(params['data.geometry.sad_mm']):g} mm, source to detector "
        f"{float(params['data.geometry.sdd_mm']):g} mm;",
        f"- detector {detector} pixels of "
        f"{float(params['data.geometry.pixel_mm']):g} mm.",
        "",
        "## Measured quality (this run)",
        "",
        "| scored on | PSNR 3D (dB) | SSIM 3D | MAE (HU) |",
        "|---|---|---|---|",
    ]
    for prefix, what in _SCORED.items():
        if f"{prefix}/psnr_3d" in metrics:
            lines.append(
                f"| {what} | {metrics[f'{prefix}/psnr_3d']:.2f} | "
                f"{metrics.get(f'{prefix}/ssim_3d', float('nan')):.3f} | "
                f"{metrics.get(f'{prefix}/mae_hu', float('nan')):.0f} |"
            )
    if "best/epoch" in metrics:
        lines += [
            "",
            f"Weights of epoch {int(metrics['best/epoch'])}, the best on the "
            f"validation patients ({metrics['best/val_psnr_3d']:.2f} dB).",
        ]
    lines += [
        "",
        "## Limits",
        "",
        f"- {data_limit}",
        "- Only for these views and this geometry: other angles, distances, "
        "detectors or field of view need a new training.",
        "- Fine detail below the voxel size is not recovered; a few views "
        "cannot determine every structure, so the network fills in what is "
        "typical of its training data.",
        "",
    ]
    return "\n".join(lines)
