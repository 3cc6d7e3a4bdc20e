"""Project pipelines: one per stage; ``__default__`` runs the whole job.

``train`` and ``__default__`` are kedro-mlflow PipelineML objects: when they
finish, the inference pipeline is logged to the MLflow run as a model, with the
best checkpoint as its artifact, so ``mlflow.pyfunc.load_model`` can serve it.
"""

from __future__ import annotations

import re
from importlib.metadata import requires, version
from pathlib import Path

from kedro.pipeline import Pipeline
from kedro_mlflow.pipeline import pipeline_ml_factory

import ct_pipeline
from ct_pipeline.pipelines import drr, evaluate, predict, train

MODEL_ARTIFACT = "reconstructor"


def model_requirements() -> list[str]:
    """What serving the logged model installs: the project's own runtime
    dependencies, torch pinned to the release installed here (its build, CPU
    or CUDA, is the server's choice). The project's code itself travels with
    the model (``code_paths``): it is on no package index."""
    torch_release = version("torch").split("+")[0]
    runtime = [r for r in requires("ct_pipeline") or [] if "extra ==" not in r]
    return [f"torch=={torch_release}"] + [
        r for r in runtime if re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] != "torch"
    ]


def _with_model_logging(training: Pipeline) -> Pipeline:
    return pipeline_ml_factory(
        training=training,
        inference=predict.create_inference_pipeline(),
        input_name="drr_input",
        log_model_kwargs={
            "name": MODEL_ARTIFACT,
            "pip_requirements": model_requirements(),
            "code_paths": [str(Path(ct_pipeline.__file__).parent)],
            # Set per run by hooks.ServedModelHook, from the trained model.
            "signature": None,
        },
    )


def register_pipelines() -> dict[str, Pipeline]:
    render = drr.create_pipeline()
    learn = train.create_pipeline() + evaluate.create_pipeline()
    return {
        "drr": render,
        # The parts of sharded `drr` runs (drr.shard=i/n) made one data set.
        "drr_merge": drr.create_merge_pipeline(),
        # The split alone, for multi-node runs that train under torchrun.
        "split": train.create_pipeline().only_nodes("split_dataset"),
        "train": _with_model_logging(learn),
        "evaluate": evaluate.create_pipeline(),
        "predict": predict.create_pipeline(),
        "__default__": _with_model_logging(render + learn),
    }
