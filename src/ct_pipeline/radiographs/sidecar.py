"""Read a PNG or TIFF film (8 or 16 bit grayscale) with its JSON sidecar.

The sidecar is ``<image stem>.json`` beside the image::

    {
      "view": "PA",                    # or "view_angle_deg": 0 (one of the two)
      "patient_orientation": ["L", "F"],
      "pixel_mm": [0.15, 0.15],        # (row, col) in the detector plane, or one number
      "sdd_mm": 1800, "sad_mm": 1600,  # source to detector, source to isocentre
      "values": "intensity",           # or "log" (natural-log units after the rescale)
      "values_rise_with_exposure": true,
      "rescale_slope": 1.0, "rescale_intercept": 0.0,   # optional
      "open_field_value": 60000        # optional: the value of direct exposure
    }

The fields mean what their DICOM namesakes do (see ``radiographs.dicom``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ct_pipeline.radiographs.film import Film, RadiographError, view_angle

IMAGE_SUFFIXES = {".png", ".tif", ".tiff"}
# Pillow's grayscale modes -> bits per pixel.
_BITS = {"L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16}
_REQUIRED = (
    "patient_orientation",
    "pixel_mm",
    "sdd_mm",
    "sad_mm",
    "values",
    "values_rise_with_exposure",
)


def sidecar_path(image: Path) -> Path:
    return image.with_suffix(".json")


def read_image_film(path: Path) -> Film:
    """The film in ``path`` described by its sidecar; errors name the file."""
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError as error:
        raise RadiographError(f"{path}: no sidecar {side.name} beside it") from error
    except (OSError, json.JSONDecodeError) as error:
        raise RadiographError(f"{side}: not readable JSON ({error})") from error
    if not isinstance(meta, dict):
        raise RadiographError(
            f"{side}: expected a JSON object, got {type(meta).__name__}"
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if ("view" in meta) == ("view_angle_deg" in meta):
        missing.append("view or view_angle_deg (exactly one)")
    if missing:
        raise RadiographError(f"{side}: lacks {', '.join(missing)}")
    if meta["values"] not in ("intensity", "log"):
        raise RadiographError(
            f"{side}: values must be 'intensity' or 'log', got {meta['values']!r}"
        )
    pixels, bits = _read_pixels(path)
    slope = _number(meta.get("rescale_slope", 1.0), side, "rescale_slope")
    intercept = _number(meta.get("rescale_intercept", 0.0), side, "rescale_intercept")
    spacing = meta["pixel_mm"]
    spacing = [spacing, spacing] if isinstance(spacing, int | float) else spacing
    if not isinstance(spacing, list) or len(spacing) != 2:
        raise RadiographError(f"{side}: pixel_mm must be a number or [row, col]")
    orientation = meta["patient_orientation"]
    if not isinstance(orientation, list) or len(orientation) != 2:
        raise RadiographError(f"{side}: patient_orientation must be 2 letters' codes")
    open_field = meta.get("open_field_value")
    full_scale = sorted((intercept, slope * (2**bits - 1) + intercept))
    return Film(
        source=str(path),
        values=pixels * slope + intercept,
        encoding=meta["values"],
        rises_with_exposure=bool(meta["values_rise_with_exposure"]),
        value_range=(full_scale[0], full_scale[1]),
        angle_deg=(
            view_angle(str(meta["view"]), f"{side}: view")
            if "view" in meta
            else _number(meta["view_angle_deg"], side, "view_angle_deg")
        ),
        orientation=(str(orientation[0]), str(orientation[1])),
        pixel_mm=(
            _number(spacing[0], side, "pixel_mm"),
            _number(spacing[1], side, "pixel_mm"),
        ),
        sdd_mm=_number(meta["sdd_mm"], side, "sdd_mm"),
        sad_mm=_number(meta["sad_mm"], side, "sad_mm"),
        open_field_value=(
            None
            if open_field is None
            else _number(open_field, side, "open_field_value") * slope + intercept
        ),
    )


def _number(value: Any, side: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RadiographError(f"{side}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise RadiographError(f"{side}: {key} must be finite, got {value!r}")
    return float(value)


def _read_pixels(path: Path) -> tuple[np.ndarray, int]:
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames != 1:
                raise RadiographError(
                    f"{path}: holds {frames} frames; one film per file"
                )
            if image.mode not in _BITS:
                raise RadiographError(
                    f"{path}: needs an 8 or 16 bit grayscale image, got mode {image.mode}"
                )
            return np.asarray(image, dtype=np.float64), _BITS[image.mode]
    except (UnidentifiedImageError, OSError) as error:
        raise RadiographError(f"{path}: not a readable image ({error})") from error
