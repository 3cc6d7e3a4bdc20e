"""A tiny copy of the Kedro project and in-process `kedro run` (conftest.py runs it once per session).

The copy holds the real pyproject.toml and conf/base, empty data layer folders
and a conf/local that shrinks every stage (6 phantoms, 16^3 volumes, 32 x 32
detector, the tiny model for 2 epochs) and points MLflow at a sqlite file
inside the copy, so the run takes well under a minute on two busy cores and
never touches the repository's own data or mlflow.db.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)

# Tiny settings, nested like conf/base/parameters_*.yml. 16 voxels is the
# smallest cube the tiny model takes (a multiple of 8) and still holds a
# size-11 SSIM window; 16 x 24 mm = 384 mm, the demo's field of view.
TINY_PARAMS: dict[str, Any] = {
    "phantoms": {"count": 6, "size_vox": 32, "spacing_mm": 12.0},
    "preprocess": {"volume_size": 16, "target_spacing_mm": 24.0},
    # One process: spawning workers costs more than tiny patients take, and
    # tests that patch a node's function see the patch only in this process.
    "drr": {
        "num_views": 4,
        "workers": 1,
        "geometry": {"detector_px": [32, 32], "pixel_mm": 18.0},
    },
    # 6 patients -> 3 train, 1 val, 2 test (split_patients rounds half up).
    "split": {"fractions": {"train": 0.5, "val": 0.17, "test": 0.33}},
    "train": {
        "model": "tiny",
        "epochs": 2,
        "warmup_epochs": 0.0,
        "batch_size_per_device": 2,
        "perceptual": "random_conv3d",
    },
    "evaluate": {"figures_patients": 2},
}


class TinyProject:
    """A tiny copy of the project; ``run`` is ``kedro run`` inside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.leaked_runs: int | None = None

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def tracking_uri(self) -> str:
        return tracking_uri(self.path)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters the run sees (conf/local repeats every group)."""
        return yaml.safe_load((self.path / "conf/local/parameters.yml").read_text())

    def run(
        self, pipeline_name: str | None = None, params: dict[str, Any] | None = None
    ) -> int:
        """``kedro run [--params ...]``; returns how many MLflow runs it left
        active in this process."""
        return run_kedro(self.path, pipeline_name, params)


def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def _deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_tiny_project(path: Path) -> Path:
    """Copy the project skeleton into ``path`` with tiny conf/local overrides.

    conf/local repeats whole top-level keys because OmegaConfigLoader's default
    merge replaces a top-level key of base by local's, it does not merge into it.
    """
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / "pyproject.toml", path / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf" / "base", path / "conf" / "base")
    local = path / "conf" / "local"
    local.mkdir(parents=True)
    # Kedro insists on the source folder; the package itself is the editable
    # install under test, so the folder stays empty.
    (path / "src").mkdir()
    for layer in DATA_LAYERS:
        (path / "data" / layer).mkdir(parents=True)

    base_params: dict[str, Any] = {}
    for file in sorted((path / "conf" / "base").glob("parameters*.yml")):
        base_params |= yaml.safe_load(file.read_text())
    missing = set(TINY_PARAMS) - set(base_params)
    if missing:
        raise ValueError(f"conf/base has no parameter groups {sorted(missing)}")
    local_params = {
        key: _deep_update(base_params[key], changes)
        for key, changes in TINY_PARAMS.items()
    }
    local_params["train"]["checkpoint_dir"] = str(
        path / "data" / "06_models" / "checkpoints"
    )
    (local / "parameters.yml").write_text(yaml.safe_dump(local_params))

    mlflow_conf = yaml.safe_load((path / "conf" / "base" / "mlflow.yml").read_text())
    mlflow_conf["server"]["mlflow_tracking_uri"] = tracking_uri(path)
    (local / "mlflow.yml").write_text(yaml.safe_dump(mlflow_conf))
    return path


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    """chdir for a session-scoped fixture (monkeypatch is function-scoped)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_kedro(
    project: Path,
    pipeline_name: str | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    """``kedro run [--pipelines NAME] [--params ...]`` in-process, in env local,
    from inside ``project``; ``params`` nested as ``--params`` gives them.

    Returns how many MLflow runs the session left active in this process.
    Torch runs single-threaded: on two shared cores a second thread slows the
    small convolutions of the tiny model dozens of times.
    """
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook

    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    # kedro-mlflow's hook is a process-wide singleton that keeps the last run id
    # and reopens it before every node, even in a later session whose pipeline
    # has tracking off (drr). One `kedro run` per process never meets this;
    # several sessions in one test process do, so each starts clean.
    mlflow_hook.run_id = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with inside(project):
        bootstrap_project(project)
        try:
            with KedroSession.create(
                project_path=project, env="local", runtime_params=params
            ) as session:
                session.run(pipeline_name=pipeline_name)
        finally:
            torch.set_num_threads(threads)
            leaked = close_stale_runs()
    return leaked


def close_stale_runs() -> int:
    """Pop runs a session left on this thread's MLflow stack, keeping their status.

    With ``tracking.run.nested: True`` kedro-mlflow re-enters its run before
    every node and ends it once, so the run stays "active" in this process and
    the next session would log into it. Each leftover is ended with the status
    the tracking store already holds (RUNNING only if the run really never ended).
    """
    import mlflow

    closed = 0
    while (run := mlflow.active_run()) is not None:
        status = mlflow.get_run(run.info.run_id).info.status
        mlflow.end_run(status if status != "RUNNING" else "FAILED")
        closed += 1
    return closed
