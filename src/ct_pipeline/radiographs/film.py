"""One radiograph as read from its file, before calibration: the contract
between the readers (DICOM, image + sidecar) and the calibration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Encoding = Literal["intensity", "log"]

# View names (DICOM ViewPosition) -> the project's view angle: the central ray
# d(theta) = (-sin theta, cos theta, 0) in RAS, so PA (beam posterior -> anterior)
# is 0 and a left lateral (left side on the detector, beam right -> left) 90.
VIEW_ANGLES_DEG = {"PA": 0.0, "LL": 90.0, "AP": 180.0, "RL": 270.0}
# Angles this close are the same view: positioners and tags round angles, and
# a few degrees change little.
ANGLE_TOLERANCE_DEG = 5.0


class RadiographError(ValueError):
    """A film that cannot be used; the message names the file and what was wrong."""


@dataclass(frozen=True)
class Film:
    """Pixel values and what they mean, as the file states them.

    ``values`` (rows, cols) are the modality values (after any rescale).
    ``encoding`` says whether they are proportional to the detected intensity
    or to its natural logarithm (plus a constant); ``rises_with_exposure``
    whether larger values mean more X-rays. ``value_range`` is the smallest and
    largest value the file can store (the detector's full scale).
    ``orientation`` is DICOM's PatientOrientation: the patient direction of
    increasing column index, then of increasing row index (e.g. ("L", "F")).
    ``pixel_mm`` (row, col) is the spacing in the detector plane; ``sdd_mm`` and
    ``sad_mm`` the source to detector and source to isocentre distances.
    ``open_field_value`` is the value direct exposure gives, when known.
    """

    source: str
    values: np.ndarray
    encoding: Encoding
    rises_with_exposure: bool
    value_range: tuple[float, float]
    angle_deg: float
    orientation: tuple[str, str]
    pixel_mm: tuple[float, float]
    sdd_mm: float
    sad_mm: float
    open_field_value: float | None = None

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise RadiographError(f"{self.source}: {what}")

        if self.values.ndim != 2 or min(self.values.shape) < 2:
            fail(
                f"expected one 2-D image, got pixel array of shape {self.values.shape}"
            )
        if not np.isfinite(self.values).all():
            fail("pixel values hold NaN or inf")
        if self.encoding not in ("intensity", "log"):
            fail(f"values must be 'intensity' or 'log', got {self.encoding!r}")
        if not math.isfinite(self.angle_deg):
            fail(f"view angle must be finite, got {self.angle_deg}")
        if len(self.pixel_mm) != 2 or not all(
            math.isfinite(s) and s > 0 for s in self.pixel_mm
        ):
            fail(f"pixel spacing must be two numbers > 0 mm, got {self.pixel_mm}")
        if not (math.isfinite(self.sdd_mm) and 0 < self.sad_mm < self.sdd_mm):
            fail(
                "need 0 < source-isocentre < source-detector distance, got "
                f"{self.sad_mm} and {self.sdd_mm} mm"
            )

    @property
    def isocentre_pixel_mm(self) -> tuple[float, float]:
        """The pixel spacing scaled back to the isocentre plane (the cone's
        magnification sdd / sad divided out): what one pixel spans in the patient."""
        shrink = self.sad_mm / self.sdd_mm
        return (self.pixel_mm[0] * shrink, self.pixel_mm[1] * shrink)


def angle_gap(a: float, b: float) -> float:
    """|a - b| in degrees on the circle, in [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def view_angle(name: str, where: str) -> float:
    """The angle of a named view (PA, AP, LL, RL); anything else is an error
    that starts with ``where`` (the file and the field)."""
    key = name.strip().upper()
    if key not in VIEW_ANGLES_DEG:
        raise RadiographError(
            f"{where} {name!r} is not one of {sorted(VIEW_ANGLES_DEG)}"
            + (
                " (LATERAL does not say which side faced the detector: use LL or RL)"
                if key == "LATERAL"
                else ""
            )
        )
    return VIEW_ANGLES_DEG[key]
