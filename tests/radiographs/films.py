"""Films made from the project's own DRRs of an asymmetric phantom, as a
detector would store them: I = I0 exp(-p), quantised, in any orientation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.drr import Geometry
from ct_pipeline.drr.projector import render_drrs

# The model's detector: 32 px of 12 mm at the isocentre cover the 384 mm cube.
MODEL = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(32, 32), pixel_mm=18.0)
GRID = CubeGrid(16, 24.0)
ANGLES = (0.0, 90.0)
I0 = 4000.0  # open-field counts, under the 12-bit full scale
BITS = 12


def phantom() -> CTVolume:
    """A left-right symmetric body with a bone marker on the patient's left
    (RAS x < 0), anterior (y > 0) and high (z > 0): it tells every flip apart."""
    axis = GRID.axis_mm()
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    hu = np.full((GRID.size,) * 3, -1000.0, dtype=np.float32)
    hu[((x / 140) ** 2 + (y / 100) ** 2 <= 1) & (np.abs(z) < 150)] = 40.0
    hu[(x + 70) ** 2 + (y - 40) ** 2 + (z - 70) ** 2 <= 35**2] = 1500.0
    return CTVolume(hu=hu, affine=GRID.affine)


def render(angle_deg: float, geometry: Geometry = MODEL) -> np.ndarray:
    """Line integrals (H, W) in the project's frame (rows to the feet,
    columns along u)."""
    return render_drrs(phantom(), geometry, [angle_deg])[0]


def stored(p: np.ndarray, orientation: tuple[str, str], frame: str) -> np.ndarray:
    """The project-frame image ``p`` turned to ``orientation``.

    ``frame`` is the project frame's own orientation code for this view, the
    column direction then the row direction (PA: "LF"; left lateral: "PF";
    AP: "RF"). An entry naming the opposite direction flips that axis; the row
    and column codes swapped transpose the image.
    """
    opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
    cols, rows = frame
    image = p
    if orientation[0] in (rows, opposite[rows]):  # columns run head-feet
        image = image.T
        cols, rows = rows, cols
    if orientation[1] == opposite[rows]:
        image = image[::-1]
    if orientation[0] == opposite[cols]:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def write_dx(
    path: Path,
    p: np.ndarray,
    *,
    orientation: tuple[str, str] = ("L", "F"),
    view: str | None = "PA",
    geometry: Geometry = MODEL,
    photometric: str = "MONOCHROME1",
    relationship: str | None = "LIN",
    sign: int | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    frames: int = 1,
    drop: tuple[str, ...] = (),
    **tags: Any,
) -> Path:
    """A DICOM DX film of line integrals ``p`` (already in ``orientation``).

    LIN: stored = I (values rise with exposure) or full scale - I. LOG: the
    rescaled value is ln I (or -ln I) in natural-log units, stored at 1/slope
    units per ln unit.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForProcessing,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    rises = sign == 1 if sign is not None else photometric == "MONOCHROME1"
    full = 2**BITS - 1
    intensity = I0 * np.exp(-p.astype(np.float64))
    if relationship == "LOG":
        log_i = np.log(intensity)
        value = log_i if rises else np.log(full) - log_i
    else:
        value = intensity if rises else full - intensity
    bits_stored = 16 if relationship == "LOG" else BITS
    raw = np.round((value - intercept) / slope)
    # A detector saturates at its full scale.
    pixels = np.clip(raw, 0, 2**bits_stored - 1).astype(np.uint16)
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
    if view is not None:
        ds.ViewPosition = view
    ds.PatientOrientation = list(orientation)
    ds.ImagerPixelSpacing = [geometry.pixel_mm, geometry.pixel_mm]
    ds.DistanceSourceToDetector = geometry.sdd_mm
    ds.DistanceSourceToPatient = geometry.sad_mm
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.HighBit = 16, 15
    ds.BitsStored = bits_stored
    ds.PixelRepresentation = 0
    if relationship is not None:
        ds.PixelIntensityRelationship = relationship
    if sign is not None:
        ds.PixelIntensityRelationshipSign = sign
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames > 1:
        ds.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    for keyword in drop:
        delattr(ds, keyword)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, p: np.ndarray, i0: float = 60000.0, **meta: Any) -> Path:
    """A 16-bit PNG of intensities I0 exp(-p) and its sidecar (``meta``
    overrides or, with value None, removes a field)."""
    from PIL import Image

    pixels = np.round(i0 * np.exp(-p.astype(np.float64))).astype(np.uint16)
    Image.fromarray(pixels).save(path)
    sidecar = {
        "view": "PA",
        "patient_orientation": ["L", "F"],
        "pixel_mm": MODEL.pixel_mm,
        "sdd_mm": MODEL.sdd_mm,
        "sad_mm": MODEL.sad_mm,
        "values": "intensity",
        "values_rise_with_exposure": True,
    }
    sidecar.update(meta)
    path.with_suffix(".json").write_text(
        json.dumps({k: v for k, v in sidecar.items() if v is not None})
    )
    return path
