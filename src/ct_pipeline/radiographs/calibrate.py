"""Film pixel values -> line integrals on the model's detector.

Each step is a small pure function; ``calibrate`` chains them for one film:

1. ``log_intensity``: values -> ln I (plus a constant), from the encoding
   (intensity or log) and whether values rise with exposure;
2. ``open_field_level``: ln I0 of the direct exposure (the brightest pixels);
3. ``line_integrals``: p = ln I0 - ln I = -ln(I / I0);
   then ``scatter.remove_scatter``: the halo taken out, on the film's own
   pixels (its width is the film's, in its detector plane, and the halo
   reaching the model's field comes also from anatomy outside it), before
   any resampling mixes pixels (the halo adds intensities, not logs); I0 is
   then set again from the primary's open field;
4. ``orient``: flips (and a transpose) into the project's detector frame
   (rows superior -> inferior, columns along u = d x v of the view);
5. ``resample``: from the film's pixel grid to the model's detector, both
   measured in the isocentre plane and centred on the isocentre's projection.

Steps 1-2 and the checks, which no halo changes, are ``level_film``; the rest
is ``calibrate_levelled``. A halo estimate tries some thirty halos per film:
it levels each film once, and hears its warnings once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, map_coordinates

from ct_pipeline.drr import Geometry, view_frames
from ct_pipeline.radiographs.film import Encoding, Film, RadiographError
from ct_pipeline.radiographs.open_field import open_field_level
from ct_pipeline.radiographs.scatter import NO_SCATTER, ScatterModel, remove_scatter

logger = logging.getLogger(__name__)

# An orientation letter must lie within 60 degrees of the detector axis it
# names (cos 60 = 0.5): oblique letters ("LP") are fine, a film labelled with
# the beam's own direction is not.
MIN_AXIS_COSINE = 0.5
_DIRECTIONS = {
    "R": (1.0, 0.0, 0.0),
    "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0),
    "P": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}


def log_intensity(
    values: np.ndarray,
    encoding: Encoding,
    rises_with_exposure: bool,
    value_range: tuple[float, float],
) -> np.ndarray:
    """ln I up to a constant.

    An intensity image that falls with exposure stores full scale minus I. A
    log image is taken to store ln I in natural-log units (after the rescale);
    its constant cancels against the open field's. Intensities <= 0 (dead or
    fully blocked pixels) count as the smallest positive one, so every p is
    finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if encoding == "log":
        return values if rises_with_exposure else -values
    intensity = values if rises_with_exposure else value_range[1] - values
    positive = intensity[intensity > 0]
    if positive.size == 0:
        raise ValueError("no pixel records any X-rays (every intensity <= 0)")
    return np.log(np.maximum(intensity, positive.min()))


def line_integrals(log_i: np.ndarray, level: float) -> np.ndarray:
    """p = -ln(I / I0) = ln I0 - ln I: 0 in air, growing with tissue."""
    return level - log_i


def _direction(code: str) -> np.ndarray:
    letters = code.strip().upper()
    if not letters or any(c not in _DIRECTIONS for c in letters):
        raise ValueError(
            f"PatientOrientation entry {code!r} is not made of {''.join(_DIRECTIONS)}"
        )
    vector = np.sum([_DIRECTIONS[c] for c in letters], axis=0)
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise ValueError(f"PatientOrientation entry {code!r} has opposite letters")
    return vector / norm


def _film_axes(
    orientation: tuple[str, str], angle_deg: float
) -> tuple[bool, bool, bool]:
    """How a film stored with ``orientation`` sits against the project's frame
    of the view at ``angle_deg``: (turned a quarter, rows reversed, columns
    reversed), the flips counted after the turn."""
    if len(orientation) != 2:
        raise ValueError(f"PatientOrientation needs 2 entries, got {orientation}")
    _, u, v = (t[0].numpy() for t in view_frames(torch.tensor([angle_deg])))
    along_cols, along_rows = (_direction(c) for c in orientation)
    # The film is turned a quarter when its columns run head to feet.
    turned = bool(abs(along_cols @ v) > abs(along_rows @ v))
    if turned:
        along_rows, along_cols = along_cols, along_rows
    row_cos, col_cos = float(along_rows @ v), float(along_cols @ u)
    if min(abs(row_cos), abs(col_cos)) < MIN_AXIS_COSINE:
        raise ValueError(
            f"PatientOrientation {list(orientation)} does not fit a view at "
            f"{angle_deg:g} deg (its detector axes run toward "
            f"{_name(u)} and {_name(v)})"
        )
    return turned, row_cos < 0, col_cos < 0


def orient(
    image: np.ndarray,
    pixel_mm: tuple[float, float],
    orientation: tuple[str, str],
    angle_deg: float,
) -> tuple[np.ndarray, tuple[float, float]]:
    """The image and its (row, col) spacing in the project's frame for the view
    at ``angle_deg``: rows toward the feet, columns along u = d x v.

    ``orientation`` is DICOM's PatientOrientation: the direction of increasing
    column index, then of increasing row index.
    """
    turned, flip_rows, flip_cols = _film_axes(orientation, angle_deg)
    if turned:
        image, pixel_mm = image.T, (pixel_mm[1], pixel_mm[0])
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image), pixel_mm


def unorient(
    image: np.ndarray, orientation: tuple[str, str], angle_deg: float
) -> np.ndarray:
    """``orient``'s inverse: a project-frame image of the view at ``angle_deg``
    as a film stored with ``orientation`` holds it."""
    turned, flip_rows, flip_cols = _film_axes(orientation, angle_deg)
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image.T if turned else image)


def frame_orientation(angle_deg: float) -> tuple[str, str]:
    """The PatientOrientation of the project's own frame for the view at
    ``angle_deg`` (PA: ("L", "F"), left lateral: ("P", "F"); oblique views
    get two letters, e.g. ("LP", "F") at 22.5 deg)."""
    _, u, v = (t[0].numpy() for t in view_frames(torch.tensor([angle_deg])))
    return _name(u), _name(v)


def _name(vector: np.ndarray) -> str:
    return "".join(c for c, d in _DIRECTIONS.items() if float(np.dot(d, vector)) > 0.3)


def _sample_points(
    shape: tuple[int, ...],
    isocentre_pixel_mm: tuple[float, float],
    geometry: Geometry,
) -> tuple[list[np.ndarray], list[float], bool]:
    """Where each model pixel's centre falls on an oriented film of ``shape``
    (film pixel coordinates, per axis), the smoothing that averages the film
    over a model pixel's width, and whether the film covers the detector."""
    target_mm = geometry.pixel_mm / geometry.magnification
    coords, smoothing, covered = [], [], True
    for n_model, n_film, film_mm in zip(
        geometry.detector_px, shape, isocentre_pixel_mm, strict=True
    ):
        ratio = target_mm / film_mm
        centres = (np.arange(n_model) - (n_model - 1) / 2) * ratio + (n_film - 1) / 2
        coords.append(centres)
        smoothing.append(math.sqrt(max(ratio**2 - 1.0, 0.0) / 12.0))
        reach = ratio / 2 - 1e-6
        covered &= bool(
            centres[0] - reach >= -0.5 and centres[-1] + reach <= n_film - 0.5
        )
    return coords, smoothing, covered


def resample(
    p: np.ndarray, isocentre_pixel_mm: tuple[float, float], geometry: Geometry
) -> tuple[np.ndarray, bool]:
    """``p`` (oriented) on the model's detector, and whether the film covers it.

    Both grids are measured in the isocentre plane (each detector's
    magnification divided out) and centred on the isocentre's projection,
    taken to be the film's centre. Where the film's pixels are finer, they are
    first smoothed so that each model pixel averages the film over its own
    width (a Gaussian of the variance a box of that width adds). Outside the
    film its edge is extended.
    """
    coords, smoothing, covered = _sample_points(p.shape, isocentre_pixel_mm, geometry)
    smoothed = gaussian_filter(p, sigma=smoothing, mode="nearest")
    rows, cols = np.meshgrid(*coords, indexing="ij")
    out = map_coordinates(smoothed, [rows, cols], order=1, mode="nearest")
    return out.astype(np.float32), covered


@dataclass(frozen=True)
class LevelledFilm:
    """A film calibrated as far as its halo allows: everything ``calibrate``
    does that no halo changes, done once however many halos are then tried.

    Attributes:
        film: The film.
        angle_deg: The model's view it provides.
        p: Its line integrals against its open field, on its own pixels (the
            open field only provisional where ``film`` gives none).
        warnings: What the user should hear about it, once: logged by
            whoever levelled it for them (``warn_about``).
    """

    film: Film
    angle_deg: float
    p: np.ndarray
    warnings: tuple[str, ...]


def _film_level(film: Film, log_i: np.ndarray) -> tuple[float, list[str]]:
    """ln I0 of ``film`` (its ``log_i``), and a warning if it was clipped."""

    def log_of(values: tuple[float, ...]) -> np.ndarray:
        return log_intensity(
            np.asarray(values),
            film.encoding,
            film.rises_with_exposure,
            film.value_range,
        )

    if film.open_field_value is not None:
        return float(log_of((film.open_field_value,))[0]), []
    level = open_field_level(log_i)
    if level < float(log_of(film.value_range).max()) - 1e-9:
        return level, []
    return level, [
        f"{film.source}: the open field is clipped at the detector's full scale, "
        "so I0 and every line integral are underestimated; give the open field's "
        "value (sidecar open_field_value) or use an unclipped film"
    ]


def level_film(film: Film, geometry: Geometry, angle_deg: float) -> LevelledFilm:
    """``calibrate``'s first, halo-free part: ``film`` read to line integrals
    against its open field, checked against ``geometry``'s detector for the
    model's view at ``angle_deg``."""
    try:
        log_i = log_intensity(
            film.values, film.encoding, film.rises_with_exposure, film.value_range
        )
        level, warnings = _film_level(film, log_i)
        turned = _film_axes(film.orientation, angle_deg)[0]
    except ValueError as error:
        raise RadiographError(f"{film.source}: {error}") from error
    shape, pixel_mm = log_i.shape, film.isocentre_pixel_mm
    if turned:
        shape, pixel_mm = shape[::-1], pixel_mm[::-1]
    if not _sample_points(shape, pixel_mm, geometry)[2]:
        rows, cols = geometry.detector_px
        span = geometry.pixel_mm / geometry.magnification
        warnings.append(
            f"{film.source}: the film ({shape[0] * pixel_mm[0]:.0f} x "
            f"{shape[1] * pixel_mm[1]:.0f} mm at the isocentre) does not cover the "
            f"model's detector ({rows * span:.0f} x {cols * span:.0f} mm); its "
            "edge is extended"
        )
    return LevelledFilm(film, angle_deg, line_integrals(log_i, level), tuple(warnings))


def calibrate_levelled(
    levelled: LevelledFilm, geometry: Geometry, scatter: ScatterModel = NO_SCATTER
) -> np.ndarray:
    """``calibrate``'s second part, the one a halo changes: ``scatter``'s halo
    taken out of the levelled film, which is then oriented and resampled."""
    film = levelled.film
    primary = remove_scatter(
        levelled.p,
        scatter,
        film.pixel_mm,
        open_field_from_primary=film.open_field_value is None,
    )
    oriented, pixel_mm = orient(
        primary, film.isocentre_pixel_mm, film.orientation, levelled.angle_deg
    )
    return resample(oriented, pixel_mm, geometry)[0]


def calibrate(
    film: Film,
    geometry: Geometry,
    angle_deg: float,
    scatter: ScatterModel = NO_SCATTER,
) -> np.ndarray:
    """The film's line integrals on ``geometry``'s detector, oriented for the
    model's view at ``angle_deg`` (the film's own angle or the opposite one:
    the same rays, seen from the other side), with ``scatter``'s halo (its
    sigma in the film's detector plane) taken out; its warnings logged."""
    levelled = level_film(film, geometry, angle_deg)
    warn_about([levelled])
    return calibrate_levelled(levelled, geometry, scatter)


def warn_about(levelled: Sequence[LevelledFilm]) -> None:
    """Log the warnings of ``levelled`` films."""
    for film in levelled:
        for warning in film.warnings:
            logger.warning("%s", warning)
