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
from typing import Any

from ct_pipeline.ct.io import parse_orientation
from ct_pipeline.drr.geometry import Geometry, resolve_angles
from ct_pipeline.inference import Refinement
from ct_pipeline.models.unet3d import LEVELS
from ct_pipeline.pipelines.parameter_keys import known_keys, split_known
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


def check_parameters(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raise ParameterError naming every unknown key (against ``defaults``,
    conf/base's parameters) and every invalid value of the stages present."""
    params, problems = split_known(params, known_keys(defaults))

    def check(key: str, ok: bool, expected: str, value: Any) -> None:
        if not ok:
            problems.append(f"{key}: expected {expected}, got {value!r}")

    def attempt(key: str, build: Callable[[], object]) -> object | None:
        try:
            return build()
        except (TypeError, ValueError, KeyError) as error:
            problems.append(f"{key}: {error}")
            return None

    phantoms = params.get("phantoms") or {}
    for name in ("count", "size_vox"):
        if name in phantoms:
            value = phantoms[name]
            check(
                f"phantoms.{name}",
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                "an integer >= 1",
                value,
            )
    if "spacing_mm" in phantoms:
        value = phantoms["spacing_mm"]
        check("phantoms.spacing_mm", _positive_number(value), "a number > 0", value)
    if "replace_real_ct" in phantoms:
        value = phantoms["replace_real_ct"]
        check(
            "phantoms.replace_real_ct", isinstance(value, bool), "true or false", value
        )

    orientation = (params.get("raw") or {}).get("assume_orientation")
    if orientation is not None:
        attempt("raw.assume_orientation", lambda: parse_orientation(orientation))

    preprocess = params.get("preprocess") or {}
    if "volume_size" in preprocess:
        size = preprocess["volume_size"]
        check(
            "preprocess.volume_size",
            isinstance(size, int)
            and not isinstance(size, bool)
            and size >= MIN_VOLUME_SIZE
            and size % SIZE_MULTIPLE == 0,
            f"an integer multiple of {SIZE_MULTIPLE}, >= {MIN_VOLUME_SIZE} "
            "(e.g. 32, 64, 128)",
            size,
        )
    if "target_spacing_mm" in preprocess:
        value = preprocess["target_spacing_mm"]
        check(
            "preprocess.target_spacing_mm",
            _positive_number(value),
            "a number > 0",
            value,
        )

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
        value = drr.get("mu_water_per_mm")
        check("drr.mu_water_per_mm", _positive_number(value), "a number > 0", value)

    train = params.get("train")
    if train is not None:
        config = attempt("train", lambda: TrainConfig.from_params(train))
        if isinstance(config, TrainConfig) and isinstance(rendered, list):
            missing = [
                a for a in config.angles if not any(abs(a - r) < 1e-6 for r in rendered)
            ]
            check(
                "train.num_views / train.angles_deg",
                not missing,
                f"views among the rendered drr angles {rendered}",
                config.angles,
            )

    if "refinement" in params:
        attempt("refinement", lambda: Refinement(**dict(params["refinement"] or {})))

    evaluate = params.get("evaluate") or {}
    if "figures_patients" in evaluate:
        value = evaluate["figures_patients"]
        check(
            "evaluate.figures_patients",
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "an integer >= 1 (the first is the run's headline figure)",
            value,
        )

    split = params.get("split") or {}
    fractions = split.get("fractions")
    if fractions is not None:
        values = list(dict(fractions).values())
        check(
            "split.fractions",
            all(_positive_number(v) or v == 0 for v in values)
            and abs(sum(values) - 1) < 1e-6,
            "train/val/test fractions >= 0 summing to 1",
            fractions,
        )

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
