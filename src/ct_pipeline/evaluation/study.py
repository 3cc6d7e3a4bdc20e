"""The two studies: quality against the number of views, and what each
component of the hybrid contributes.

A *variant* is one training setup: a model (the hybrid, the CNN-only U-Net,
or the plain back-projection U-Net), its switches, the view count and the
loss weights. Every variant starts from the same base ``TrainConfig`` (the
project's ``params:train``) and changes only what names it: no variant gets
its own tuning. Each (variant, seed) is trained on the train split, the best
epoch on val kept, and scored on the test split with the project's metrics.
This module knows no Kedro and no MLflow; the driver
(``ct_pipeline.drivers.study``) gives it data and a metric sink.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.inference import Refinement, reconstruct
from ct_pipeline.losses import DEFAULT_WEIGHTS
from ct_pipeline.metrics import evaluate_volume, hf_energy_ratio, to_unit
from ct_pipeline.models import count_parameters
from ct_pipeline.models.configs import BP_UNET
from ct_pipeline.training import TrainConfig, train_model
from ct_pipeline.training.bundle import trained_bundle
from ct_pipeline.training.config import ADVERSARIAL
from ct_pipeline.training.data import load_one
from ct_pipeline.training.sink import MetricSink

# Component ablations: the ModelConfig switch each one turns off.
COMPONENT_SWITCHES: dict[str, dict[str, bool]] = {
    "no_swin": {"swin": False},
    "no_cross_view": {"cross_view": False},
    "no_residual_dense": {"residual_dense": False},
    "no_attention_gates": {"attention_gates": False},
    "no_deep_supervision": {"deep_supervision": False},
}
# The six-term loss reduced to its L1 and SSIM terms, at their own weights.
L1_SSIM_ONLY = {
    name: (DEFAULT_WEIGHTS[name] if name in ("l1", "ssim") else 0.0)
    for name in DEFAULT_WEIGHTS
}
# The adversarial row: X2CT-GAN-scale weight beside the six terms.
STUDY_ADVERSARIAL_WEIGHT = 0.01
# The resolution row: the same epochs, the first three quarters on the cube
# binned 2 times per side, the rest training a correction at the full grid.
COARSE_TO_FINE = "coarse_to_fine"
COARSE_TO_FINE_FINE_FRACTION = 0.25
COMPONENTS = (
    "full",
    *COMPONENT_SWITCHES,
    "loss_l1_ssim",
    "adversarial",
    COARSE_TO_FINE,
)
# Columns of both tables, in order.
COLUMNS = (
    "variant",
    "model",
    "num_views",
    "seed",
    "psnr_3d",
    "ssim_3d",
    "psnr_body",
    "mae_hu",
    "psnr_slice",
    "ssim_slice",
    "hf_energy_ratio",
    "train_s",
    "epochs",
    "best_epoch",
    "n_parameters",
)


@dataclass(frozen=True)
class Variant:
    """One training setup of a study; ``name`` is what the tables call it."""

    name: str
    model: str
    num_views: int
    model_overrides: dict[str, Any] = field(default_factory=dict)
    loss_weights: dict[str, float] | None = None
    epochs: int | None = None  # None: the base config's
    # The share of the epochs trained at the full grid after a coarse stage
    # at bin 2 (train.resolution_schedule); None: the base config's schedule.
    fine_fraction: float | None = None

    def run_name(self, seed: int) -> str:
        return f"study/{self.name}-{self.num_views}v-s{seed}"

    def config(self, base: TrainConfig, seed: int, checkpoint_dir: str) -> TrainConfig:
        """The base config with only this variant's fields (and the seed) changed."""
        overrides = {**base.model_overrides, **self.model_overrides}
        epochs = self.epochs or base.epochs
        schedule = base.resolution_schedule
        if self.fine_fraction is not None:
            fine = max(1, round(epochs * self.fine_fraction))
            schedule = [
                {"bin": 2, "epochs": epochs - fine},
                {"bin": 1, "epochs": fine},
            ]
        return base.replace(
            model=self.model,
            model_overrides={} if self.model == BP_UNET else overrides,
            num_views=self.num_views,
            angles_deg=None,
            loss_weights=self.loss_weights
            if self.loss_weights is not None
            else base.loss_weights,
            epochs=epochs,
            resolution_schedule=schedule,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
        )


def views_variants(
    model: str,
    baseline: str,
    views: Sequence[int],
    reference_epochs: int | None = None,
) -> list[Variant]:
    """{views} x {hybrid, CNN-only U-Net, plain back-projection U-Net}.

    The back-projection U-Net steps faster; ``reference_epochs`` gives it the
    epochs that fill the hybrid's training time (train_s in the table shows it).
    """
    variants = []
    for v in views:
        variants += [
            Variant("hybrid", model, v),
            Variant("unet", baseline, v),
            Variant("bp_unet", BP_UNET, v, epochs=reference_epochs),
        ]
    return variants


def component_variants(
    model: str, num_views: int, components: Sequence[str]
) -> list[Variant]:
    """The full hybrid and one variant per component switched off."""
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ValueError(
            f"unknown study components {unknown}; expected some of {list(COMPONENTS)}"
        )
    variants = []
    for name in components:
        if name == "full":
            variants.append(Variant("hybrid", model, num_views))
        elif name == "loss_l1_ssim":
            variants.append(Variant(name, model, num_views, loss_weights=L1_SSIM_ONLY))
        elif name == COARSE_TO_FINE:
            variants.append(
                Variant(
                    name, model, num_views, fine_fraction=COARSE_TO_FINE_FINE_FRACTION
                )
            )
        elif name == "adversarial":
            weights = {**DEFAULT_WEIGHTS, ADVERSARIAL: STUDY_ADVERSARIAL_WEIGHT}
            variants.append(Variant(name, model, num_views, loss_weights=weights))
        else:
            variants.append(Variant(name, model, num_views, COMPONENT_SWITCHES[name]))
    return variants


def run_variant(
    variant: Variant,
    config: TrainConfig,
    volumes: Mapping[str, Any],
    drr_sets: Mapping[str, Any],
    split: Mapping[str, list[str]],
    refinement: Refinement,
    sink: MetricSink | None = None,
) -> dict[str, Any]:
    """Train one (variant, seed), score its best epoch (then ``refinement``) on
    the test split: one table row.

    ``volumes`` and ``drr_sets`` map patient ids to loaders or values; patients
    are read one at a time.
    """
    started = time.perf_counter()
    result = train_model(dict(volumes), dict(drr_sets), dict(split), config, sink=sink)
    train_s = time.perf_counter() - started
    bundle = trained_bundle(result, config, refinement, split)
    network = bundle.network()
    scores = []
    for patient in sorted(split["test"]):
        truth: CTVolume = load_one(volumes[patient])
        predicted = reconstruct(network, bundle, load_one(drr_sets[patient]))
        pred_unit = to_unit(predicted.hu, config.hu_window)
        true_unit = to_unit(truth.hu, config.hu_window)
        scores.append(
            {
                **evaluate_volume(pred_unit, true_unit, truth.hu, config.hu_window),
                "hf_energy_ratio": hf_energy_ratio(pred_unit, true_unit),
            }
        )
    means = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return {
        "variant": variant.name,
        "model": config.model,
        "num_views": variant.num_views,
        "seed": config.seed,
        **means,
        "train_s": round(train_s, 1),
        "epochs": config.epochs,
        "best_epoch": result.best_epoch,
        "n_parameters": count_parameters(network, trainable_only=False),
    }


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (variant, views)."""
    metrics = ["psnr_3d", "ssim_3d", "psnr_body", "mae_hu", "train_s"]
    grouped = table.groupby(["variant", "num_views"], sort=False)[metrics]
    out = grouped.mean().join(grouped.std(ddof=0).add_suffix("_std"))
    out["seeds"] = grouped.size()
    return out.reset_index()


def views_figure(table: pd.DataFrame) -> Figure:
    """PSNR3D against the number of views, one line per model (mean +- std over seeds)."""
    summary = summarise(table)
    figure = Figure(figsize=(5.5, 4))
    ax = figure.add_subplot()
    for variant, rows in summary.groupby("variant", sort=False):
        rows = rows.sort_values("num_views")
        ax.errorbar(
            rows["num_views"],
            rows["psnr_3d"],
            yerr=rows["psnr_3d_std"],
            marker="o",
            capsize=3,
            label=str(variant),
        )
    views = sorted(summary["num_views"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(views, [str(v) for v in views])
    ax.set_xlabel("number of views")
    ax.set_ylabel("PSNR3D on the test split (dB)")
    ax.set_title("Quality against the number of views")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def components_figure(table: pd.DataFrame) -> Figure:
    """PSNR3D of each component ablation against the full hybrid (bars, +- std)."""
    summary = summarise(table)
    full = summary.loc[summary["variant"] == "hybrid", "psnr_3d"]
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    positions = range(len(summary))
    ax.bar(
        positions,
        summary["psnr_3d"],
        yerr=summary["psnr_3d_std"],
        capsize=3,
        color=["tab:blue" if v == "hybrid" else "tab:gray" for v in summary["variant"]],
    )
    if len(full):
        ax.axhline(float(full.iloc[0]), color="tab:blue", lw=1, ls="--")
    low = float((summary["psnr_3d"] - summary["psnr_3d_std"].fillna(0)).min())
    high = float((summary["psnr_3d"] + summary["psnr_3d_std"].fillna(0)).max())
    margin = max(0.5, (high - low) * 0.2)
    ax.set_ylim(math.floor(low - margin), math.ceil(high + margin))
    ax.set_xticks(list(positions), list(summary["variant"]), rotation=30, ha="right")
    ax.set_ylabel("PSNR3D on the test split (dB)")
    views = sorted(summary["num_views"].unique())
    ax.set_title(
        f"What each component contributes ({', '.join(map(str, views))} views)"
    )
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure
