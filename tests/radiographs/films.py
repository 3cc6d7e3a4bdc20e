"""The tests' phantom and model, and film writers that can also spoil a film:
``ct_pipeline.radiographs.writing``'s files with tags or sidecar fields
changed, added or removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.drr import Geometry
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.radiographs.sidecar import sidecar_path
from ct_pipeline.radiographs.writing import dicom_film, write_image_film

# The model's detector: 32 px of 12 mm at the isocentre cover the 384 mm cube.
MODEL = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(32, 32), pixel_mm=18.0)
GRID = CubeGrid(16, 24.0)
ANGLES = (0.0, 90.0)


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


def write_dx(
    path: Path,
    p: np.ndarray,
    angle_deg: float = 0.0,
    *,
    geometry: Geometry = MODEL,
    frames: int = 1,
    drop: tuple[str, ...] = (),
    **options: Any,
) -> Path:
    """``dicom_film`` of ``p`` saved to ``path``; ``options`` in CamelCase are
    DICOM keywords set afterwards, the others go to ``dicom_film``; ``drop``
    removes tags; ``frames`` > 1 repeats the image as frames."""
    tags = {k: v for k, v in options.items() if k[0].isupper()}
    ds = dicom_film(
        p,
        angle_deg,
        geometry,
        **{k: v for k, v in options.items() if k not in tags},
    )
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    for keyword in drop:
        delattr(ds, keyword)
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * frames
    ds.save_as(path, enforce_file_format=True)
    return path


def stored_pixels(path: Path) -> np.ndarray:
    """The pixel values as the DICOM file holds them."""
    return pydicom.dcmread(path).pixel_array


def write_png(
    path: Path,
    p: np.ndarray,
    angle_deg: float = 0.0,
    *,
    geometry: Geometry = MODEL,
    orientation: tuple[str, str] | None = None,
    **meta: Any,
) -> Path:
    """``write_image_film`` of ``p``, its sidecar's fields overridden by
    ``meta`` (a value None removes the field)."""
    write_image_film(path, p, angle_deg, geometry, orientation=orientation)
    side = sidecar_path(path)
    sidecar = {**json.loads(side.read_text()), **meta}
    side.write_text(json.dumps({k: v for k, v in sidecar.items() if v is not None}))
    return path
