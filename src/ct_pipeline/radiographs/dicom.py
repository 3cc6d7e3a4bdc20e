"""Read one DICOM radiograph (DX, CR, RF, XA; single frame) into a Film.

Tags used, each required unless said otherwise (a missing one is an error
naming the file and the tag, never a default):

- view: ``PositionerPrimaryAngle`` (degrees, detector toward the patient's
  left positive, 0 = detector anterior = PA) if present, else ``ViewPosition``
  (PA, AP, LL, RL); when both are present they must agree;
- geometry: ``DistanceSourceToDetector``, ``DistanceSourceToPatient`` (taken
  as the source to isocentre distance), ``ImagerPixelSpacing`` (detector
  plane), or ``PixelSpacing`` with ``EstimatedRadiographicMagnificationFactor``
  (patient plane, times the factor gives the detector plane);
- orientation: ``PatientOrientation``;
- values: the modality rescale (``RescaleSlope``/``RescaleIntercept`` or a
  Modality LUT, optional), ``PixelIntensityRelationship`` (LIN or LOG) and
  ``PixelIntensityRelationshipSign`` (+1: values rise with exposure), or,
  where the sign is absent, ``PhotometricInterpretation`` (MONOCHROME1 shows
  low values white, so its values rise with exposure; MONOCHROME2 the reverse);
- ``PresentationIntentType`` FOR PRESENTATION (processed for viewing, not
  proportional to the exposure) is accepted with a warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from ct_pipeline.radiographs.film import (
    ANGLE_TOLERANCE_DEG,
    Encoding,
    Film,
    RadiographError,
    angle_gap,
    view_angle,
)

logger = logging.getLogger(__name__)

RADIOGRAPH_MODALITIES = {"DX", "CR", "RF", "XA"}
# Spacing tags that disagree by more than this are inconsistent geometry.
SPACING_TOLERANCE = 0.02


def read_dicom_film(path: Path) -> Film:
    """The film in ``path``; every problem raises RadiographError naming it."""
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise RadiographError(f"{path}: not a readable DICOM file ({error})") from error

    def fail(what: str) -> RadiographError:
        return RadiographError(f"{path}: {what}")

    def need(keyword: str) -> Any:
        value = ds.get(keyword)
        if value is None or value == "":
            raise fail(f"lacks {keyword}, which a radiograph's calibration needs")
        return value

    modality = str(ds.get("Modality", ""))
    if modality not in RADIOGRAPH_MODALITIES:
        raise fail(
            f"Modality {modality or 'missing'} is not a radiograph "
            f"({', '.join(sorted(RADIOGRAPH_MODALITIES))})"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise fail(f"NumberOfFrames is {frames}; one film per file is read")
    photometric = str(need("PhotometricInterpretation"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise fail(f"PhotometricInterpretation {photometric} is not MONOCHROME1/2")
    try:
        values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    except (AttributeError, ValueError, RuntimeError) as error:
        raise fail(f"cannot decode the pixel data ({error})") from error

    bits = int(need("BitsStored"))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    full_scale = np.asarray(
        apply_modality_lut(np.asarray(stored, dtype=np.int64), ds), dtype=np.float64
    )

    relationship = str(need("PixelIntensityRelationship")).upper()
    encodings: dict[str, Encoding] = {"LIN": "intensity", "LOG": "log"}
    if relationship not in encodings:
        raise fail(f"PixelIntensityRelationship {relationship} is not LIN or LOG")
    sign = ds.get("PixelIntensityRelationshipSign")
    if sign is not None and int(sign) not in (1, -1):
        raise fail(f"PixelIntensityRelationshipSign {sign} is not +1 or -1")
    rises = int(sign) == 1 if sign is not None else photometric == "MONOCHROME1"

    if str(ds.get("PresentationIntentType", "")).upper() == "FOR PRESENTATION":
        logger.warning(
            "%s: a FOR PRESENTATION image is processed for viewing and not "
            "proportional to the exposure; a FOR PROCESSING (raw) film "
            "reconstructs more faithfully",
            path,
        )

    sdd = float(need("DistanceSourceToDetector"))
    sad = float(need("DistanceSourceToPatient"))
    entries = need("PatientOrientation")
    # One value comes back as a plain string, two or more as a sequence.
    orientation = (
        (str(entries),) if isinstance(entries, str) else tuple(map(str, entries))
    )
    if len(orientation) != 2:
        raise fail(f"PatientOrientation {list(orientation)} needs 2 entries")
    return Film(
        source=str(path),
        values=values,
        encoding=encodings[relationship],
        rises_with_exposure=rises,
        value_range=(float(full_scale.min()), float(full_scale.max())),
        angle_deg=_angle(ds, path, fail),
        orientation=(orientation[0], orientation[1]),
        pixel_mm=_detector_spacing(ds, fail),
        sdd_mm=sdd,
        sad_mm=sad,
    )


def _angle(ds: pydicom.Dataset, path: Path, fail: Any) -> float:
    position = ds.get("ViewPosition")
    named = view_angle(str(position), f"{path}: ViewPosition") if position else None
    primary = ds.get("PositionerPrimaryAngle")
    if primary is None:
        if named is None:
            raise fail("lacks ViewPosition (PA, AP, LL, RL) and PositionerPrimaryAngle")
        return named
    angle = float(primary)
    if named is not None and angle_gap(angle, named) > ANGLE_TOLERANCE_DEG:
        raise fail(
            f"ViewPosition {position} ({named:g} deg) disagrees with "
            f"PositionerPrimaryAngle {angle:g} deg"
        )
    return angle


def _detector_spacing(ds: pydicom.Dataset, fail: Any) -> tuple[float, float]:
    """(row, col) spacing in mm in the detector plane."""
    imager = ds.get("ImagerPixelSpacing")
    patient = ds.get("PixelSpacing")
    factor = ds.get("EstimatedRadiographicMagnificationFactor")
    from_patient = None
    if patient is not None and factor is not None:
        from_patient = tuple(float(s) * float(factor) for s in patient)
    if imager is None:
        if from_patient is None:
            raise fail(
                "lacks ImagerPixelSpacing (or PixelSpacing with "
                "EstimatedRadiographicMagnificationFactor)"
            )
        spacing = from_patient
    else:
        spacing = tuple(float(s) for s in imager)
        if from_patient is not None and not all(
            math.isclose(a, b, rel_tol=SPACING_TOLERANCE)
            for a, b in zip(spacing, from_patient, strict=False)
        ):
            raise fail(
                f"ImagerPixelSpacing {list(spacing)} disagrees with PixelSpacing "
                f"{[float(s) for s in patient]} x EstimatedRadiographicMagnificationFactor "
                f"{float(factor)}"
            )
    if len(spacing) != 2:
        raise fail(f"pixel spacing {list(spacing)} needs 2 values (row, column)")
    return (spacing[0], spacing[1])
