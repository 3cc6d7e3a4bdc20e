"""Every stage's parameters checked when a run starts, before any file is written.

Every key must be one the project defines (parameter_keys.py), in every group
and at the top level. A bad value found by a late node would leave earlier layers rewritten and
later ones stale (03_primary and 04_feature disagreeing). ``check_parameters``
builds each stage's typed objects from the merged parameters (the same
constructors the nodes use, so the rules are defined once, there) and reports
every problem at once, each with its parameter key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ct_pipeline.ct.io import parse_orientation
from ct_pipeline.drr.geometry import Geometry, resolve_angles
from ct_pipeline.hooks.parameter_keys import known_keys, split_known
from ct_pipeline.inference import Refinement
from ct_pipeline.models.unet3d import LEVELS
from ct_pipeline.pipelines.drr.workload import parse_shard, worker_count
from ct_pipeline.radiographs import ScatterModel
from ct_pipeline.training import TrainConfig

logger = logging.getLogger(__name__)

# The network halves the cube LEVELS - 1 times and 3-D SSIM needs 11 voxels.
MIN_VOLUME_SIZE = 16
SIZE_MULTIPLE = 2 ** (LEVELS - 1)


class ParameterError(ValueError):
    """One or more parameters are invalid; the message lists each by key."""


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _integer_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _volume_size(value: Any) -> bool:
    return _integer_at_least(MIN_VOLUME_SIZE)(value) and value % SIZE_MULTIPLE == 0


def _fractions(value: Any) -> bool:
    if value is None:  # the split's own default
        return True
    values = list(dict(value).values())
    return (
        all(_positive_number(v) or v == 0 for v in values)
        and abs(sum(values) - 1) < 1e-6
    )


class Rule(NamedTuple):
    """``stage.field`` must pass ``test``; checked where the field is given, or
    wherever the stage is given when ``required``."""

    key: str
    test: Callable[[Any], bool]
    expected: str
    required: bool = False


# Values no constructor checks; the typed ones (Geometry, TrainConfig,
# Refinement, ...) are built in check_parameters so their rules stay in them.
RULES: tuple[Rule, ...] = (
    Rule("phantoms.count", _integer_at_least(1), "an integer >= 1"),
    Rule("phantoms.size_vox", _integer_at_least(1), "an integer >= 1"),
    Rule("phantoms.spacing_mm", _positive_number, "a number > 0"),
    Rule("phantoms.replace_real_ct", lambda v: isinstance(v, bool), "true or false"),
    Rule(
        "preprocess.volume_size",
        _volume_size,
        f"an integer multiple of {SIZE_MULTIPLE}, >= {MIN_VOLUME_SIZE} (e.g. 32, 64, 128)",
    ),
    Rule("preprocess.target_spacing_mm", _positive_number, "a number > 0"),
    Rule("drr.mu_water_per_mm", _positive_number, "a number > 0", required=True),
    Rule(
        "evaluate.figures_patients",
        _integer_at_least(1),
        "an integer >= 1 (the first is the run's headline figure)",
    ),
    Rule("split.fractions", _fractions, "train/val/test fractions >= 0 summing to 1"),
    Rule(
        "radiographs.estimate_scatter", lambda v: isinstance(v, bool), "true or false"
    ),
    Rule("predict.skip_model_patients", lambda v: isinstance(v, bool), "true or false"),
)


def check_parameters(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raise ParameterError naming every unknown key (against ``defaults``,
    conf/base's parameters) and every invalid value of the stages present."""
    params, problems = split_known(params, known_keys(defaults))

    for rule in RULES:
        stage_name, field = rule.key.split(".")
        stage = params.get(stage_name) or {}
        if field in stage or (rule.required and stage):
            value = stage.get(field)
            if not rule.test(value):
                problems.append(f"{rule.key}: expected {rule.expected}, got {value!r}")

    def attempt(key: str, build: Callable[[], object]) -> object | None:
        try:
            return build()
        except (TypeError, ValueError, KeyError) as error:
            problems.append(f"{key}: {error}")
            return None

    orientation = (params.get("raw") or {}).get("assume_orientation")
    if orientation is not None:
        attempt("raw.assume_orientation", lambda: parse_orientation(orientation))

    preprocess = params.get("preprocess") or {}
    drr = params.get("drr") or {}
    geometry = rendered = None
    if drr:
        geometry = attempt(
            "drr.geometry", lambda: Geometry.from_dict(dict(drr.get("geometry") or {}))
        )
        rendered = attempt(
            "drr.num_views / drr.angles_deg",
            lambda: resolve_angles(drr.get("num_views"), drr.get("angles_deg")),
        )
        for key, parse in (("workers", worker_count), ("shard", parse_shard)):
            try:
                parse(drr.get(key))
            except ValueError as error:  # its message names drr.<key>
                problems.append(str(error))

    train = params.get("train")
    if train is not None:
        config = attempt("train", lambda: TrainConfig.from_params(train))
        if isinstance(config, TrainConfig) and isinstance(rendered, list):
            missing = [
                a for a in config.angles if not any(abs(a - r) < 1e-6 for r in rendered)
            ]
            if missing:
                problems.append(
                    "train.num_views / train.angles_deg: expected views among the "
                    f"rendered drr angles {rendered}, got {config.angles!r}"
                )

    if "refinement" in params:
        attempt("refinement", lambda: Refinement(**dict(params["refinement"] or {})))

    scatter = (params.get("radiographs") or {}).get("scatter")
    if scatter is not None:
        attempt("radiographs.scatter", lambda: ScatterModel(**dict(scatter)))

    if problems:
        raise ParameterError(
            "invalid parameters (nothing was run or written):\n  - "
            + "\n  - ".join(problems)
        )
    if isinstance(geometry, Geometry) and "volume_size" in preprocess:
        field_mm = (
            min(geometry.detector_px) * geometry.pixel_mm / geometry.magnification
        )
        cube_mm = preprocess["volume_size"] * preprocess.get("target_spacing_mm", 0)
        if field_mm < cube_mm:
            logger.warning(
                "the detector sees %.0f mm at the isocentre, less than the %.0f mm cube "
                "(drr.geometry.detector_px x pixel_mm x sad_mm / sdd_mm < "
                "preprocess.volume_size x target_spacing_mm): views clip the body",
                field_mm,
                cube_mm,
            )
