"""Kedro project settings."""

import os
import sys

from kedro.config import OmegaConfigLoader

from ct_pipeline.logs import rich_in_a_terminal
from ct_pipeline.quiet import quiet_known_warnings

# Telemetry would try to reach the internet on every command; the project opts
# out for everyone who runs it (the .telemetry file does the same for the CLI).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
# `kedro mlflow ui` starts a bare `mlflow` from PATH, and a virtual environment
# used without activating it (.venv/bin/kedro) is not on PATH: its bin folder,
# where `mlflow` lives beside this interpreter, goes first.
_INTERPRETER_BIN = os.path.dirname(sys.executable)
if _INTERPRETER_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_INTERPRETER_BIN, os.environ.get("PATH", "")])

CONFIG_LOADER_CLASS = OmegaConfigLoader
# Soft merge: a partial `drr:` block in conf/local (or another env) changes the
# keys it names and keeps base's siblings, instead of replacing the whole group.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}

# Also here, for sessions that Kedro's CLI did not start (notebooks, scripts).
quiet_known_warnings()
rich_in_a_terminal()  # conf/logging.yml writes plain lines

from ct_pipeline.hooks import (  # noqa: E402 - after the telemetry switch
    LayerGuardHook,
    ModelCardHook,
    ParameterCheckHook,
    RunOwnerHook,
    RunSummaryHook,
    ServedModelHook,
    SystemMetricsHook,
)
from ct_pipeline.hooks.model_folders import ModelFolderHook  # noqa: E402

HOOKS = (
    ParameterCheckHook(),
    ModelFolderHook(),
    LayerGuardHook(),
    SystemMetricsHook(),
    RunOwnerHook(),
    RunSummaryHook(),
    ServedModelHook(),
    ModelCardHook(),
)
