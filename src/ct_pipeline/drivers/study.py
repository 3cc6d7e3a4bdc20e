"""``make study``: the views study and the component study, one command.

A small driver around one Kedro session (not a pipeline: it trains dozens of
models, each its own MLflow run). It reads the catalogued DRR sets, CTs,
split and ``params:train`` / ``params:study``, then for every (variant, seed)
trains and scores through ``ct_pipeline.evaluation.study``, each in an MLflow
run nested under one study run and tagged with the study id and variant.
The two tables and two figures go to ``data/08_reporting/study/`` through the
catalogue and to the study run::

    python -m ct_pipeline.drivers.study [--env ENV] [--params "study.seeds=[0]"]

Run ``kedro run --pipelines drr`` first (``make study`` does).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from ct_pipeline.datasets.mlflow_sink import MlflowSink
from ct_pipeline.drivers.runtime_params import parse_runtime_params
from ct_pipeline.evaluation.study import (
    COLUMNS,
    Variant,
    component_variants,
    components_figure,
    run_variant,
    summarise,
    views_figure,
    views_variants,
)
from ct_pipeline.inference import Refinement
from ct_pipeline.training import TrainConfig, split_patients

logger = logging.getLogger(__name__)
STUDY_TAG = "ct_pipeline.study"


def _variants(study: dict[str, Any]) -> dict[str, list[Variant]]:
    return {
        "views": views_variants(
            study["model"],
            study["baseline"],
            study["views"],
            study.get("reference_epochs"),
        ),
        "components": component_variants(
            study["model"], study["component_views"], study["components"]
        ),
    }


def run_study(
    project_path: Path, env: str | None, extra_params: dict[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """Run both studies; returns the two tables (also saved and logged)."""
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    with KedroSession.create(
        project_path=project_path, env=env, runtime_params=extra_params
    ) as session:
        # kedro-mlflow sets the tracking URI here (create() is typed as the base class).
        context = session.load_context()  # type: ignore[attr-defined]
        catalog = context.catalog
        study = dict(catalog.load("params:study"))
        base = TrainConfig.from_params(catalog.load("params:train"))
        refinement = Refinement(**catalog.load("params:refinement"))
        volumes = catalog.load("preprocessed_ct")
        if not volumes:
            raise ValueError(
                "no preprocessed CTs in the catalogue's preprocessed_ct: run "
                "`kedro run --pipelines drr` first"
            )
        split_params = catalog.load("params:split")
        split = split_patients(
            volumes.keys(), split_params["fractions"], split_params["seed"]
        )
        drr_sets = catalog.load("drr_sets")
        variants = _variants(study)
        study_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        checkpoints = str(Path(study["checkpoint_dir"]) / study_id)
        tracking_uri = mlflow.get_tracking_uri()
        tables: dict[str, pd.DataFrame] = {}
        done: dict[tuple[str, int, int], dict[str, Any]] = {}
        with mlflow.start_run(run_name=f"study/{study_id}") as parent:
            mlflow.set_tags({STUDY_TAG: study_id, "ct_pipeline.study_role": "parent"})
            mlflow.log_params(
                {f"study.{k}": str(v) for k, v in study.items()}
                | {"study.base_train_identity": base.identity_hash({})}
                | {f"refinement.{k}": v for k, v in refinement.to_dict().items()}
            )
            for table_name, members in variants.items():
                rows = []
                for variant in members:
                    for seed in study["seeds"]:
                        key = (variant.name, variant.num_views, seed)
                        if key not in done:  # the full hybrid is in both tables
                            done[key] = _run_one(
                                variant,
                                variant.config(base, seed, checkpoints),
                                volumes,
                                drr_sets,
                                split,
                                refinement,
                                study_id,
                                tracking_uri,
                            )
                        rows.append(done[key])
                tables[table_name] = pd.DataFrame(rows, columns=list(COLUMNS))
            catalog.save("study_views_table", tables["views"])
            catalog.save("study_components_table", tables["components"])
            catalog.save("study_views_figure", views_figure(tables["views"]))
            catalog.save(
                "study_components_figure", components_figure(tables["components"])
            )
            for name, table in tables.items():
                summary = summarise(table)
                logger.info("study %s, %s:\n%s", study_id, name, summary.to_string())
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / f"{name}_summary.csv"
                    summary.to_csv(path, index=False, float_format="%.4f")
                    mlflow.log_artifact(str(path))
            logger.info("study %s done: MLflow run %s", study_id, parent.info.run_id)
    return tables


def _run_one(
    variant: Variant,
    config: TrainConfig,
    volumes: dict[str, Any],
    drr_sets: dict[str, Any],
    split: dict[str, list[str]],
    refinement: Refinement,
    study_id: str,
    tracking_uri: str,
) -> dict[str, Any]:
    import mlflow

    with mlflow.start_run(run_name=variant.run_name(config.seed), nested=True) as run:
        mlflow.set_tags(
            {
                STUDY_TAG: study_id,
                "ct_pipeline.study_variant": variant.name,
                "ct_pipeline.model": config.model,
                "ct_pipeline.num_views": str(variant.num_views),
            }
        )
        row = run_variant(
            variant,
            config,
            volumes,
            drr_sets,
            split,
            refinement,
            MlflowSink(tracking_uri, run.info.run_id),
        )
        mlflow.log_params(
            {f"refinement.{k}": v for k, v in refinement.to_dict().items()}
        )
        mlflow.log_metrics(
            {
                f"test/{k}": float(row[k])
                for k in (
                    "psnr_3d",
                    "ssim_3d",
                    "psnr_body",
                    "mae_hu",
                    "psnr_slice",
                    "ssim_slice",
                )
            }
            | {"train_s": float(row["train_s"])}
        )
        mlflow.set_tag("n_parameters", str(row["n_parameters"]))
    logger.info(
        "%s: PSNR3D %.2f dB, SSIM3D %.3f, %.0f s",
        variant.run_name(config.seed),
        row["psnr_3d"],
        row["ssim_3d"],
        row["train_s"],
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-path", type=Path, default=Path.cwd())
    parser.add_argument("--env", default=None)
    parser.add_argument(
        "--params",
        default=None,
        help='overrides separated by ";", e.g. "study.seeds=[0];train.epochs=3"',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    run_study(args.project_path.resolve(), args.env, parse_runtime_params(args.params))


if __name__ == "__main__":
    main()
