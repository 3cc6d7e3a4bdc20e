"""Line integrals (a DRR view) written as a film: a DICOM DX file or a 16-bit
PNG with its JSON sidecar, as a detector would store it, I = I0 exp(-p)
rounded to integers.

Made to try ``predict`` on films whose truth is known (DRRs of a CT) and to
test the readers; the files carry every tag or field the readers need. The
view is named (``ViewPosition`` / ``"view"``) where it has a name (PA, LL, AP,
RL), else given by its angle (``PositionerPrimaryAngle`` / ``"view_angle_deg"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    generate_uid,
)

from ct_pipeline.drr import Geometry
from ct_pipeline.radiographs.calibrate import frame_orientation, unorient
from ct_pipeline.radiographs.film import VIEW_ANGLES_DEG, angle_gap
from ct_pipeline.radiographs.sidecar import sidecar_path

# A 12-bit detector's full scale is 4095; an open field just under it uses
# the range without clipping.
DX_BITS = 12
DX_OPEN_FIELD = 4000.0
# A 16-bit PNG's full scale is 65535.
PNG_OPEN_FIELD = 60000.0
# ln I is stored at this many units per natural-log unit in a LOG film.
LOG_UNITS = 1000.0


def _view_name(angle_deg: float) -> str | None:
    for name, angle in VIEW_ANGLES_DEG.items():
        if angle_gap(angle, angle_deg) == 0:
            return name
    return None


def dicom_film(
    p: np.ndarray,
    angle_deg: float,
    geometry: Geometry,
    *,
    orientation: tuple[str, str] | None = None,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME1",
    relationship: Literal["LIN", "LOG"] = "LIN",
    sign: Literal[1, -1] | None = None,
    i0: float = DX_OPEN_FIELD,
    slope: float | None = None,
    intercept: float = 0.0,
) -> Dataset:
    """A DICOM DX film (FOR PROCESSING) of the view ``p``.

    Args:
        p: (H, W) line integrals in the project's frame of the view at
            ``angle_deg`` (rows toward the feet, columns along u = d x v), as
            ``render_drrs`` gives them, on ``geometry``'s detector.
        angle_deg: The view's angle (0 = PA, 90 = left lateral).
        geometry: Source distances and pixel spacing written
            (``DistanceSourceToDetector``, ``DistanceSourceToPatient``,
            ``ImagerPixelSpacing``).
        orientation: ``PatientOrientation`` to store the image in (it is
            flipped or turned to match); default the project's own frame.
        photometric: ``PhotometricInterpretation``.
        relationship: LIN stores intensities (``DX_BITS`` bits), LOG stores
            ln I at ``LOG_UNITS`` per natural-log unit (16 bits).
        sign: ``PixelIntensityRelationshipSign`` (+1: values rise with
            exposure); None leaves it out, and the values rise with exposure
            for MONOCHROME1 only, as the readers then assume.
        i0: The open field's intensity (direct exposure), in stored units.
        slope: ``RescaleSlope``: stored = (value - intercept) / slope; default
            1 for LIN and 1 / ``LOG_UNITS`` for LOG.
        intercept: ``RescaleIntercept``.

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``;
        values past the stored range saturate, as a detector does.
    """
    orientation = orientation or frame_orientation(angle_deg)
    rises = sign == 1 if sign is not None else photometric == "MONOCHROME1"
    bits = 16 if relationship == "LOG" else DX_BITS
    slope = (
        slope if slope is not None else 1 / LOG_UNITS if relationship == "LOG" else 1.0
    )
    full = 2**DX_BITS - 1
    intensity = i0 * np.exp(-unorient(p, orientation, angle_deg).astype(np.float64))
    if relationship == "LOG":
        log_i = np.log(intensity)
        value = log_i if rises else np.log(full) - log_i
    else:
        value = intensity if rises else full - intensity
    pixels = np.clip(np.round((value - intercept) / slope), 0, 2**bits - 1)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForProcessing
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForProcessing
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PROCESSING"
    name = _view_name(angle_deg)
    if name is not None:
        ds.ViewPosition = name
    else:
        ds.PositionerPrimaryAngle = angle_deg
    ds.PatientOrientation = list(orientation)
    ds.ImagerPixelSpacing = [geometry.pixel_mm, geometry.pixel_mm]
    ds.DistanceSourceToDetector = geometry.sdd_mm
    ds.DistanceSourceToPatient = geometry.sad_mm
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.HighBit, ds.BitsStored = 16, 15, bits
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = relationship
    if sign is not None:
        ds.PixelIntensityRelationshipSign = sign
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_dicom_film(
    path: Path,
    p: np.ndarray,
    angle_deg: float,
    geometry: Geometry,
    *,
    orientation: tuple[str, str] | None = None,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME1",
) -> Path:
    """``dicom_film`` (12-bit intensities; MONOCHROME2 stores full scale - I)
    saved to ``path``.

    Args:
        path: Where to write (``.dcm``).
        p: (H, W) line integrals in the project's frame of the view.
        angle_deg: The view's angle (0 = PA, 90 = left lateral).
        geometry: The detector ``p`` was rendered on.
        orientation: ``PatientOrientation`` to store the image in; default
            the project's own frame.
        photometric: MONOCHROME1 (values rise with exposure) or MONOCHROME2.

    Returns:
        ``path``.
    """
    dicom_film(
        p, angle_deg, geometry, orientation=orientation, photometric=photometric
    ).save_as(path, enforce_file_format=True)
    return path


def write_image_film(
    path: Path,
    p: np.ndarray,
    angle_deg: float,
    geometry: Geometry,
    *,
    orientation: tuple[str, str] | None = None,
    i0: float = PNG_OPEN_FIELD,
) -> Path:
    """A 16-bit PNG of intensities ``i0`` exp(-p) and its sidecar
    (``radiographs.sidecar``'s format) beside it.

    Args:
        path: The image's path (``.png``); the sidecar is ``.json`` beside it.
        p: (H, W) line integrals in the project's frame of the view.
        angle_deg: The view's angle (0 = PA, 90 = left lateral).
        geometry: The detector ``p`` was rendered on.
        orientation: ``patient_orientation`` to store the image in; default
            the project's own frame.
        i0: The open field's value, at most 65535.

    Returns:
        ``path``.
    """
    orientation = orientation or frame_orientation(angle_deg)
    intensity = i0 * np.exp(-unorient(p, orientation, angle_deg).astype(np.float64))
    Image.fromarray(np.round(intensity).astype(np.uint16)).save(path)
    name = _view_name(angle_deg)
    sidecar = {
        **({"view": name} if name is not None else {"view_angle_deg": angle_deg}),
        "patient_orientation": list(orientation),
        "pixel_mm": geometry.pixel_mm,
        "sdd_mm": geometry.sdd_mm,
        "sad_mm": geometry.sad_mm,
        "values": "intensity",
        "values_rise_with_exposure": True,
    }
    sidecar_path(path).write_text(json.dumps(sidecar, indent=2))
    return path
