"""Project hooks: check every parameter before a run starts; lock and commit
the layers a run writes; tell the user where a run's results are when it ends."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from kedro.config import OmegaConfigLoader
from kedro.framework.hooks import hook_impl
from kedro.io import DatasetError
from kedro_mlflow.pipeline.pipeline_ml import PipelineML
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ct_pipeline.commit import LayerCommit, recover
from ct_pipeline.datasets.layers import ManifestDataset, StagedLayer
from ct_pipeline.evaluation.model_card import CARD_NAME, model_card
from ct_pipeline.hooks.checks import check_parameters
from ct_pipeline.hooks.results_view import results_view_url, runs_url
from ct_pipeline.lock import acquire, process_alive, release
from ct_pipeline.pipelines.drr.pipeline import create_pipeline as drr_pipeline
from ct_pipeline.pipelines.drr.workload import Shard, parse_shard
from ct_pipeline.pipelines.predict.serving import served_input, served_signature
from ct_pipeline.training.data import load_one

logger = logging.getLogger(__name__)


def base_parameters(config_loader: Any) -> dict[str, Any]:
    """The parameters of the base environment alone (conf/base): the keys the
    project defines, before any other environment or ``--params`` adds one."""
    base = config_loader.base_env
    loader = OmegaConfigLoader(
        conf_source=str(config_loader.conf_source),
        base_env=base,
        default_run_env=base,
        env=base,
    )
    return dict(loader["parameters"])


class ParameterCheckHook:
    """Refuses unknown keys and bad values of any stage before a node runs or
    a file is written."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        check_parameters(context.params, base_parameters(context.config_loader))


# Seconds between samples of CPU, memory (and GPU) use, logged as system/* metrics.
SYSTEM_METRICS_INTERVAL_S = 5.0


class SystemMetricsHook:
    """Every MLflow run records CPU and memory use, and the GPUs' where NVIDIA's
    management library is installed (``pip install -e ".[gpu]"``): MLflow's own
    system-metrics logging, in place of watching ``nvidia-smi``."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(1)
        mlflow.enable_system_metrics_logging()


# Tags naming the process that owns a run, so that a later run can tell a
# crashed one (its process gone) from one still going (a parallel study).
OWNER_HOST, OWNER_PID = "ct_pipeline.host", "ct_pipeline.pid"


def mark_killed_runs(client: MlflowClient, host: str) -> list[str]:
    """Set KILLED on RUNNING runs of this host whose process is gone; their ids.

    A ``kill -9`` (or a power cut) leaves the MLflow run RUNNING forever;
    runs owned by a live process, or by another host, are left alone.
    """
    killed: list[str] = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return killed
    for run in client.search_runs(
        experiments,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST}` = '{host}'",
    ):
        pid = run.data.tags.get(OWNER_PID, "")
        if pid.isdigit() and not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    return killed


class RunOwnerHook:
    """Tags every run with its host and process; marks runs killed earlier as
    KILLED, and the run of this process KILLED when it is interrupted."""

    def __init__(self) -> None:
        self._tagged: set[str] = set()
        self._ended = True
        # Ctrl-C or SIGTERM (TrainingStopped) is no Exception: Kedro calls no
        # error hook, and MLflow's own exit handler would end the run as
        # FINISHED. Registered after MLflow's (imported above), this one runs
        # before it.
        atexit.register(self.end_interrupted_run)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._ended = False
        try:
            killed = mark_killed_runs(MlflowClient(), socket.gethostname())
        except MlflowException as error:  # tracking unreachable: not a reason to stop
            logger.warning("could not check for killed MLflow runs: %s", error)
            return
        for run_id in killed:
            logger.warning(
                "MLflow run %s was left RUNNING by a killed process: marked KILLED",
                run_id,
            )

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._ended = True

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._ended = True  # kedro-mlflow ends its run as FAILED

    def end_interrupted_run(self) -> None:
        """At exit: a run whose pipeline neither finished nor failed was interrupted."""
        if not self._ended and mlflow.active_run() is not None:
            mlflow.end_run(status="KILLED")
            logger.warning("interrupted: MLflow run marked KILLED")

    @hook_impl
    def before_node_run(self) -> None:
        run = mlflow.active_run()
        if run is not None and run.info.run_id not in self._tagged:
            mlflow.set_tags(
                {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}
            )
            self._tagged.add(run.info.run_id)


def written_paths(pipeline: Any, catalog: Any) -> dict[str, str]:
    """Dataset name -> local file or folder, for every output of ``pipeline``
    that lives on disk (memory and tracking-only datasets have no path)."""
    written = {}
    for name in sorted(pipeline.all_outputs()):
        try:
            description = catalog[name]._describe()
        except DatasetError:  # not catalogued (a memory dataset): nothing on disk
            continue
        path = description.get("path") or description.get("filepath")
        if isinstance(catalog[name], StagedLayer):
            path = catalog[name].target_path  # a sharded run writes its part
        if path:
            written[name] = str(Path(path).resolve())
    return written


def ui_command() -> str:
    """``kedro mlflow ui`` as this interpreter's environment runs it, activated or not.

    The path is relative to the working folder when the environment lies in it
    (``.venv/bin/kedro``), whole otherwise.
    """
    kedro = Path(sys.executable).parent / "kedro"
    try:
        kedro = kedro.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{kedro} mlflow ui"


def _staged_layers(pipeline: Any, catalog: Any) -> list[StagedLayer]:
    layers = []
    for name in sorted(pipeline.all_outputs()):
        try:
            dataset = catalog[name]
        except DatasetError:
            continue
        if isinstance(dataset, StagedLayer):
            layers.append(dataset)
    return layers


def _check_sharded(pipeline: Any, shard: Shard) -> None:
    """A shard writes part of the drr layers; any other node would read or
    write the data set as if that part were all of it."""
    others = {n.name for n in pipeline.nodes} - {n.name for n in drr_pipeline().nodes}
    if others:
        raise ValueError(
            f"drr.shard={shard} renders part of the data set: run it with "
            "`kedro run --pipelines drr` alone, then merge the parts with "
            f"`kedro run --pipelines drr_merge` (this run also has "
            f"{', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''})"
        )


class LayerGuardHook:
    """One run at a time writes a layer, and a data set's layers change together.

    Before the run: a lock on every layer it writes (``ct_pipeline.lock``);
    then, if it writes a data-set manifest, the commit of an earlier run that
    was killed half-way is finished, leftover staging folders are removed, and
    its layers are staged in one ``LayerCommit``, swapped in when the run
    succeeds and dropped when it fails.
    """

    def __init__(self) -> None:
        self._locks: list[Path] = []
        self._commit: LayerCommit | None = None
        self._shard: object = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # Parsed when the run starts, after ParameterCheckHook refused a bad one.
        self._shard = (context.params.get("drr") or {}).get("shard")

    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        layers = _staged_layers(pipeline, catalog)
        shard = parse_shard(self._shard)
        if shard is not None:
            _check_sharded(pipeline, shard)
            for layer in layers:
                layer.write_part(shard.name)
        targets = [Path(p) for p in written_paths(pipeline, catalog).values()]
        # A session this process interrupted (Ctrl-C, no hook) left its locks.
        release(self._locks)
        self._locks = acquire(targets)
        records = [layer for layer in layers if isinstance(layer, ManifestDataset)]
        self._commit = None
        if records:
            self._commit = LayerCommit(records[0].target_path)
            recover([layer.target_path for layer in layers], self._commit.record)
            for layer in layers:
                layer.join(self._commit)

    @hook_impl
    def after_pipeline_run(self) -> None:
        if self._commit is not None:
            self._commit.commit()
        self._finish()

    @hook_impl
    def on_pipeline_error(self) -> None:
        if self._commit is not None:
            self._commit.abort()
        self._finish()

    def _finish(self) -> None:
        self._commit = None
        release(self._locks)
        self._locks = []


class RunSummaryHook:
    """Logs what the run wrote (from the catalogue), the MLflow run id and how to open the UI."""

    @hook_impl
    def after_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Any = None, catalog: Any = None
    ) -> None:
        # kedro-mlflow may already have closed its run: last_active_run still knows it.
        try:
            run = mlflow.active_run() or mlflow.last_active_run()
        except MlflowException:
            # The process's last run lives in another tracking store (several
            # sessions in one process, e.g. a notebook): nothing to point at.
            run = None
        lines = []
        if pipeline is not None and catalog is not None:
            written = written_paths(pipeline, catalog)
            lines += ["This run wrote:"] + [f"  {k}: {v}" for k, v in written.items()]
        if run is not None:
            try:
                url = results_view_url(MlflowClient(), run.info.experiment_id)
            except MlflowException as error:
                # Only the view is lost: the run and the layers are already
                # written, and the hooks after this one still commit them.
                logger.warning("The results view was not stored: %s", error)
                url = runs_url(run.info.experiment_id)
            lines += [
                f"MLflow run {run.info.run_id} in {mlflow.get_tracking_uri()}",
                f"  open it with `{ui_command()}` (or `make mlflow-ui`), then {url}",
            ]
        logger.info("\n".join(lines))


class ServedModelHook:
    """Gives the model that kedro-mlflow logs at the end of a training run
    (``pipeline_registry``) its signature and an input example: the views of
    the first test patient. Both need the trained model and the run's data, so
    they are set here, just before kedro-mlflow's own ``after_pipeline_run``
    logs the model with them."""

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        if not isinstance(pipeline, PipelineML):
            return  # this pipeline logs no model (drr, evaluate, predict)
        best_model = catalog.load("best_model")
        patient = catalog.load("patient_split")["test"][0]
        drr = load_one(catalog.load("drr_sets")[patient])
        pipeline.log_model_kwargs |= {
            "signature": served_signature(best_model),
            "input_example": served_input(drr, best_model),
        }


# The alias of the newest version of each registered model. MLflow reserves
# "latest"; "champion" is for a person to give after review.
CANDIDATE_ALIAS = "candidate"


def registered_name(run_name: str) -> str:
    """The registry's name for a run's model, e.g. ``ct_pipeline-small-2v``:
    one registered model per model and view count, one version per training."""
    return f"ct_pipeline-{run_name}"


class ModelCardHook:
    """Writes MODEL_CARD.md beside the model that the run logged (kedro-mlflow
    logs it in its own ``after_pipeline_run``, which runs before this one),
    from the run's own parameters, metrics and tags, and registers the model
    as a new version of ``registered_name(run name)``, aliased
    ``CANDIDATE_ALIAS``."""

    @hook_impl
    def after_pipeline_run(self) -> None:
        try:
            run = mlflow.active_run() or mlflow.last_active_run()
        except MlflowException:
            run = None  # the process's last run lives in another store
        if run is None:
            return
        client = MlflowClient()
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        if not models:
            return  # this pipeline logs no model (drr, evaluate, predict)
        data = client.get_run(run.info.run_id).data
        card = model_card(data.params, data.metrics, data.tags)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / CARD_NAME
            path.write_text(card)
            for model in models:
                client.log_model_artifact(model.model_id, str(path))
        name = registered_name(data.tags.get("mlflow.runName", "model"))
        for model in models:
            version = mlflow.register_model(model.model_uri, name)
            client.set_registered_model_alias(name, CANDIDATE_ALIAS, version.version)
            logger.info(
                "Registered the model as %s version %s (alias @%s)",
                name,
                version.version,
                CANDIDATE_ALIAS,
            )
