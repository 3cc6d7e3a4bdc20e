"""Which parameter keys exist: a typo is an error, never a silently ignored key.

Kedro merges any key it is given (``--params trian.epochs=5``, a misspelt key
in conf/local), and a node reads only the keys it knows, so a typo would leave
the default in force without a word. The known keys are defined once:

- conf/base/parameters*.yml define every group and key (each with its
  default), so the tree of those files is the schema;
- where a typed object reads a group (TrainConfig, Refinement, the imaging
  Geometry, the ModelConfig behind ``train.model_overrides``, the
  augmentation, the loss weights and the films' scatter model), that object's
  fields are the group's keys: it may take keys that conf/base leaves at the
  object's default (``train.compile``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.inference import Refinement
from ct_pipeline.losses import DEFAULT_WEIGHTS
from ct_pipeline.models import ModelConfig
from ct_pipeline.radiographs import ScatterModel
from ct_pipeline.training import TrainConfig
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.config import ADVERSARIAL

# Each known key maps to the tree of its sub-keys, or to None where any value
# is accepted (a number, a list, null).
KeyTree = Mapping[str, "KeyTree | None"]


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# Groups read by a typed object, by key path: the object's fields.
TYPED_GROUPS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("train",): _fields(TrainConfig),
    ("train", "model_overrides"): _fields(ModelConfig),
    ("train", "augment"): _fields(Augmentation),
    ("train", "loss_weights"): (*DEFAULT_WEIGHTS, ADVERSARIAL),
    ("refinement",): _fields(Refinement),
    ("drr", "geometry"): _fields(Geometry),
    ("radiographs", "scatter"): _fields(ScatterModel),
}


def known_keys(defaults: Mapping[str, Any]) -> KeyTree:
    """The key tree of ``defaults`` (conf/base's parameters), each typed
    group's keys being its object's fields."""

    def tree(default: Any, path: tuple[str, ...]) -> KeyTree | None:
        if path in TYPED_GROUPS:
            names: tuple[str, ...] = TYPED_GROUPS[path]
        elif isinstance(default, Mapping):
            names = tuple(str(k) for k in default)
        else:
            return None
        values = default if isinstance(default, Mapping) else {}
        return {name: tree(values.get(name), (*path, name)) for name in names}

    return tree(defaults, ()) or {}


def split_known(
    params: Mapping[str, Any], known: KeyTree, prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """``params`` without its unknown keys, and a line for each unknown one
    (with the closest known key, so that a typo reads as one)."""
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = (
                f"did you mean '{prefix}{close[0]}'?"
                if close
                else f"known here: {', '.join(sorted(known)) or 'none'}"
            )
            problems.append(f"unknown parameter '{name}' ({hint})")
            continue
        sub_tree = known[key]
        if sub_tree is not None and isinstance(value, Mapping):
            value, sub_problems = split_known(value, sub_tree, f"{name}.")
            problems += sub_problems
        kept[key] = value
    return kept, problems
