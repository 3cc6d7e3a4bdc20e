"""Each trained model's files in folders of its own, named like its tracking
run (``small-2v``): a 2-view and an 8-view training side by side leave both
models, their reports and their predictions usable.

The catalogue writes ``{model}`` in the paths of the datasets that belong to
one model (conf/base/catalog.yml). A run that trains fills in the name the
training gives itself (``train.model`` and its views); any other run that
uses a model fills in the one the ``model`` parameter names, else the latest
trained, and says which. A catalogue opened outside a run (a notebook) gets
the same choice, without the checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset

from ct_pipeline.training.config import TrainConfig, run_name

logger = logging.getLogger(__name__)

PLACEHOLDER = "{model}"
# The dataset whose file says that a model was trained: written by a training,
# read by every run that uses a model.
MODEL_DATASET = "best_model"


class ModelChoiceError(ValueError):
    """The ``model`` parameter names no trained model, or a run cannot use it."""


def training_name(train_params: Mapping[str, Any]) -> str:
    """What a training with these ``train`` parameters names its model."""
    config = TrainConfig.from_params(train_params)
    return run_name(config.model, len(config.angles))


def trained_models(model_path: str) -> list[str]:
    """The names of the trained models, oldest first: each folder in the place
    of ``{model}`` in ``model_path`` (the model file's catalogued path) that
    holds the file."""
    head, _, tail = model_path.partition(PLACEHOLDER)
    root = Path(head)
    if not root.is_dir():
        return []
    found = [
        (path.stat().st_mtime, path.relative_to(root).parent.as_posix())
        for path in root.glob(f"*{tail}")
        if path.is_file()
    ]
    return [name for _, name in sorted(found)]


def choose_model(requested: Any, available: Sequence[str], where: str) -> str:
    """``requested`` when it is a trained model, the latest of ``available``
    when None; a ``ModelChoiceError`` listing the trained models otherwise."""
    listing = ", ".join(available) or "none"
    if requested is None:
        if not available:
            raise ModelChoiceError(
                f"no trained model in {where}: train one first "
                "(`kedro run --pipelines train`)"
            )
        return available[-1]
    if requested not in available:
        raise ModelChoiceError(
            f"model={requested!r}: no such trained model in {where} "
            f"(trained: {listing}; leave model unset for the latest)"
        )
    return str(requested)


def _filled(config: Any, name: str) -> Any:
    if isinstance(config, str):
        return config.replace(PLACEHOLDER, name)
    if isinstance(config, Mapping):
        return {key: _filled(value, name) for key, value in config.items()}
    if isinstance(config, list):
        return [_filled(value, name) for value in config]
    return config


def _mentions(config: Any) -> bool:
    return _filled(config, "") != config


class ModelFolderHook:
    """Points the catalogue's per-model datasets at one model's folders."""

    def __init__(self) -> None:
        self._templates: dict[str, dict[str, Any]] = {}

    @hook_impl
    def after_catalog_created(
        self, catalog: Any, conf_catalog: dict[str, Any], parameters: dict[str, Any]
    ) -> None:
        self._templates = {
            name: config
            for name, config in conf_catalog.items()
            if isinstance(config, dict) and _mentions(config)
        }
        if MODEL_DATASET not in self._templates:
            return
        params = parameters.get("parameters", {})
        available = trained_models(self._model_path())
        requested = params.get("model")
        if requested is not None:
            name = str(requested)
        elif available:
            name = available[-1]
        else:  # nothing trained yet: where the configured training will write
            name = training_name(params.get("train", {}))
        self._point(catalog, name)

    @hook_impl(tryfirst=True)  # before any hook reads a path (locks, MLflow)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Any, catalog: Any
    ) -> None:
        if MODEL_DATASET not in self._templates:
            return
        requested = catalog.load("params:model")
        where = self._model_path().partition(PLACEHOLDER)[0]
        if MODEL_DATASET in pipeline.all_outputs():
            name = training_name(catalog.load("params:train"))
            if requested not in (None, name):
                raise ModelChoiceError(
                    f"model={requested!r} picks a trained model for evaluate and "
                    f"predict; this run trains and names its model itself: {name} "
                    "(from train.model and train.num_views)"
                )
        elif MODEL_DATASET in pipeline.inputs():
            available = trained_models(self._model_path())
            name = choose_model(requested, available, where)
            pipelines = "+".join(run_params.get("pipeline_names") or ["__default__"])
            logger.info(
                "%s uses the model %s (%s; trained: %s)",
                pipelines,
                name,
                "asked for"
                if requested
                else "the latest, --params model=NAME picks another",
                ", ".join(available),
            )
        else:
            return
        self._point(catalog, name)

    def _model_path(self) -> str:
        return str(self._templates[MODEL_DATASET]["filepath"])

    def _point(self, catalog: Any, name: str) -> None:
        # Kedro warns of every dataset replaced; here replacing is the point.
        catalog_log = logging.getLogger("kedro.io.data_catalog")
        catalog_log.addFilter(_not_replacing)
        try:
            for dataset, config in self._templates.items():
                catalog[dataset] = AbstractDataset.from_config(
                    dataset, _filled(config, name)
                )
        finally:
            catalog_log.removeFilter(_not_replacing)


def _not_replacing(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Replacing dataset")
