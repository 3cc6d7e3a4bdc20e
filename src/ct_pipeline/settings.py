"""Kedro project settings."""

import os
import warnings

from kedro.config import OmegaConfigLoader

# Telemetry would try to reach the internet on every command; the project opts
# out for everyone who runs it (the .telemetry file does the same for the CLI).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

CONFIG_LOADER_CLASS = OmegaConfigLoader
# Soft merge: a partial `drr:` block in conf/local (or another env) changes the
# keys it names and keeps base's siblings, instead of replacing the whole group.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}

# Known warnings of the libraries, printed on every command and not ours to
# fix: OmegaConf's resolver rename (called by Kedro and kedro-mlflow),
# kedro-mlflow's pydantic v1 idioms and its pipeline model's untyped predict.
for message in (
    r"register_new_resolver\(\) is deprecated",
    r".*Add type hints to the `predict` method",
    r"Support for class-based `config` is deprecated",
    r"Valid config keys have changed in V2",
):
    warnings.filterwarnings("ignore", message=message)

from ct_pipeline.hooks import (  # noqa: E402 - after the telemetry switch
    ParameterCheckHook,
    RunOwnerHook,
    RunSummaryHook,
    SystemMetricsHook,
)

HOOKS = (ParameterCheckHook(), SystemMetricsHook(), RunOwnerHook(), RunSummaryHook())
