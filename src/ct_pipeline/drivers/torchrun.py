"""torchrun entry point: the same worker as ``train_model``, for multi-node GPU runs.

``kedro run`` must not run under torchrun (every rank would run every node),
so this module loads the catalogued inputs through a Kedro session itself and
hands them to the worker; torchrun provides RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Run ``kedro run --pipelines drr``
(and the split) first, on a file system every node can read::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m ct_pipeline.drivers.torchrun \\
        --project-path . --env base

Rank 0 writes checkpoints under ``train.checkpoint_dir`` (``best.pt`` holds the
best weights, ``torchrun_summary.json`` the best score and whether the ranks
ended in step) and, given ``--mlflow-run-id``, logs into that MLflow run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.atomic import atomic_path
from ct_pipeline.datasets.mlflow_sink import MlflowSink
from ct_pipeline.datasets.partitions import training_partitions
from ct_pipeline.drivers.runtime_params import parse_runtime_params
from ct_pipeline.pipelines.train.nodes import check_one_dataset
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.distributed import cpu_share, distributed_worker
from ct_pipeline.training.job import TrainJob, TrainResult
from ct_pipeline.training.loop import run_training

logger = logging.getLogger(__name__)
# Written by rank 0 beside last.pt when training ends.
SUMMARY = "torchrun_summary.json"


def load_catalogued_inputs(
    project_path: Path, env: str | None, extra_params: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]], dict[str, Any], str]:
    """``preprocessed_ct`` and ``drr_sets`` (as loaders), ``patient_split``,
    ``params:train`` and the data set's id (checked as the train node does)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    with KedroSession.create(
        project_path=project_path, env=env, runtime_params=extra_params
    ) as session:
        catalog = session.load_context().catalog  # type: ignore[attr-defined]
        split = catalog.load("patient_split")
        params = dict(catalog.load("params:train"))
        cubes, views = catalog.load("preprocessed_ct"), catalog.load("drr_sets")
        dataset_id = check_one_dataset(cubes, views, catalog.load("ct_source"))
        volumes, drr_sets = training_partitions(cubes, views, split)
    return volumes, drr_sets, split, params, dataset_id


def run_under_torchrun(
    volumes: dict[str, Any],
    drr_sets: dict[str, Any],
    split: dict[str, list[str]],
    config: TrainConfig,
    sink: MlflowSink | None = None,
    dataset_id: str | None = None,
) -> TrainResult | None:
    """Train as the rank torchrun started; returns the result on rank 0, None elsewhere."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    torch.set_num_threads(cpu_share(local_world_size))
    config = config.replace(world_size=world_size)
    job = TrainJob(
        volumes,
        drr_sets,
        split,
        config,
        sink if rank == 0 else None,
        dataset_id=dataset_id,
    )
    return distributed_worker(
        run_training, job, rank, local_rank, local_world_size, "env://", None
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project-path", type=Path, default=Path.cwd())
    parser.add_argument("--env", default=None, help="Kedro config environment")
    parser.add_argument(
        "--params",
        default=None,
        help='overrides separated by ";", e.g. "train.epochs=3;train.batch_size_per_device=1"',
    )
    parser.add_argument("--mlflow-tracking-uri", default=None)
    parser.add_argument(
        "--mlflow-run-id", default=None, help="an existing run to log into (rank 0)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    volumes, drr_sets, split, params, dataset_id = load_catalogued_inputs(
        args.project_path.resolve(), args.env, parse_runtime_params(args.params)
    )
    sink = None
    if args.mlflow_run_id:
        uri = args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        sink = MlflowSink(uri, args.mlflow_run_id)
    result = run_under_torchrun(
        volumes, drr_sets, split, TrainConfig.from_params(params), sink, dataset_id
    )
    if result is not None:
        summary = result.checkpoint_paths["last"].with_name(SUMMARY)
        with atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(_summary(result), indent=2))
        logger.info(
            "best val PSNR %.2f dB at epoch %d: %s (%s)",
            result.best_val_psnr,
            result.best_epoch,
            result.checkpoint_paths["best"],
            summary,
        )


def _summary(result: TrainResult) -> dict[str, Any]:
    """What rank 0 knows at the end, for scripts (torchrun returns no value)."""
    return {
        "world_size": int(os.environ["WORLD_SIZE"]),
        "best_val_psnr": result.best_val_psnr,
        "best_epoch": result.best_epoch,
        "start_epoch": result.start_epoch,
        "max_rank_weight_diff": result.max_rank_weight_diff,
        "checkpoints": {k: str(v) for k, v in result.checkpoint_paths.items()},
    }


if __name__ == "__main__":
    main()
