"""Known start-up warnings of the libraries, silenced before Kedro loads its plugins.

Registered as a ``kedro.init`` entry point (pyproject.toml), so Kedro's CLI
runs it first, before it imports kedro-mlflow's commands; settings.py calls
it too, for sessions started elsewhere (notebooks, scripts). None of these is
ours to fix: OmegaConf's resolver rename (called by Kedro and kedro-mlflow),
kedro-mlflow's pydantic v1 idioms and its pipeline model's untyped
``predict``.
"""

from __future__ import annotations

import re
import warnings

KNOWN_WARNINGS = (
    r"register_new_resolver\(\) is deprecated",
    r".*Add type hints to the `predict` method",
    r"Support for class-based `config` is deprecated",
    r"Valid config keys have changed in V2",
)


def quiet_known_warnings() -> None:
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # MLflow checks the pipeline model's ``predict`` when the class is defined,
    # under its own "once" filter that overrides ours: define it now, with
    # warnings caught, and pass on any warning that is not a known one.
    with warnings.catch_warnings(record=True) as caught:
        import kedro_mlflow.mlflow  # noqa: F401
    for warning in caught:
        if not any(re.match(known, str(warning.message)) for known in KNOWN_WARNINGS):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
