"""``--params`` for the project's own command-line drivers (study, torchrun)."""

from __future__ import annotations

from typing import Any

import yaml


def parse_runtime_params(text: str | None) -> dict[str, Any]:
    """``"study.seeds=[0];train.epochs=3"`` -> nested runtime params (YAML values).

    Items are separated by ``;`` (a YAML list holds commas).
    """
    params: dict[str, Any] = {}
    for item in filter(None, (text or "").split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--params item {item!r} is not key=value")
        node = params
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return params
