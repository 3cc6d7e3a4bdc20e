"""A patient's films -> the views a model knows, as a DRR set of line integrals."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.radiographs.calibrate import (
    LevelledFilm,
    calibrate_levelled,
    level_film,
    warn_about,
)
from ct_pipeline.radiographs.film import (
    ANGLE_TOLERANCE_DEG,
    Film,
    RadiographError,
    angle_gap,
)
from ct_pipeline.radiographs.scatter import NO_SCATTER, ScatterModel

logger = logging.getLogger(__name__)

# Source distances this far from the model's change the cone's divergence
# enough to be worth a word (the isocentre plane is matched exactly anyway).
DISTANCE_TOLERANCE = 0.1


def match_view(film: Film, angles_deg: Sequence[float]) -> float:
    """The trained view ``film`` provides: its own angle, or the opposite one
    (an AP film for a PA model: the same rays, mirrored); else an error that
    lists the views the model knows."""
    for angle in angles_deg:
        if angle_gap(film.angle_deg, angle) <= ANGLE_TOLERANCE_DEG:
            return float(angle)
    for angle in angles_deg:
        if angle_gap(film.angle_deg + 180.0, angle) <= ANGLE_TOLERANCE_DEG:
            logger.info(
                "%s: view at %g deg used as the model's %g deg view, mirrored",
                film.source,
                film.angle_deg,
                angle,
            )
            return float(angle)
    raise RadiographError(
        f"{film.source}: the model was not trained for a view at "
        f"{film.angle_deg:g} deg; it knows {[float(a) for a in angles_deg]} deg "
        "(0 = PA, 90 = left lateral; the opposite views 180 = AP and 270 = right "
        "lateral serve too)"
    )


def level_films(
    films: Sequence[Film], geometry: Geometry, angles_deg: Sequence[float]
) -> list[LevelledFilm]:
    """One film per trained view, in the model's view order, levelled for
    ``geometry``'s detector (``level_film``: all of the calibration that no
    halo changes, with its warnings); an error names any film that does not
    fit."""
    by_view: dict[float, Film] = {}
    for film in films:
        angle = match_view(film, angles_deg)
        if angle in by_view:
            raise RadiographError(
                f"{film.source} and {by_view[angle].source} are both the "
                f"{angle:g} deg view; keep one"
            )
        by_view[angle] = film
    missing = [float(a) for a in angles_deg if float(a) not in by_view]
    if missing:
        sources = [f.source for f in films] or ["no films"]
        raise RadiographError(
            f"{', '.join(sources)}: the model needs views at "
            f"{[float(a) for a in angles_deg]} deg; nothing provides {missing}"
        )
    levelled = []
    for angle in angles_deg:
        film = by_view[float(angle)]
        one = level_film(film, geometry, float(angle))
        if (
            max(
                abs(film.sad_mm / geometry.sad_mm - 1),
                abs(film.sdd_mm / geometry.sdd_mm - 1),
            )
            > DISTANCE_TOLERANCE
            and geometry.beam == "cone"
        ):
            one = dataclasses.replace(
                one,
                warnings=(
                    f"{film.source}: source distances {film.sad_mm:.0f} / "
                    f"{film.sdd_mm:.0f} mm differ from the model's "
                    f"{geometry.sad_mm:.0f} / {geometry.sdd_mm:.0f} mm; the "
                    "isocentre plane is matched, depth magnifies differently",
                    *one.warnings,
                ),
            )
        levelled.append(one)
    return levelled


def levelled_to_views(
    levelled: Sequence[LevelledFilm],
    geometry: Geometry,
    mu_water_per_mm: float,
    scatter: ScatterModel = NO_SCATTER,
) -> DRRSet:
    """``level_films``' films calibrated onto ``geometry``'s detector with
    ``scatter``'s halo taken out. The isocentre is the world origin: films
    carry no patient position, so the reconstruction is centred there."""
    return DRRSet(
        projections=np.stack(
            [calibrate_levelled(one, geometry, scatter) for one in levelled]
        ),
        angles_deg=np.asarray([one.angle_deg for one in levelled], dtype=np.float64),
        geometry=geometry,
        isocentre_mm=np.zeros(3),
        mu_water_per_mm=mu_water_per_mm,
    )


def films_to_views(
    films: Sequence[Film],
    geometry: Geometry,
    angles_deg: Sequence[float],
    mu_water_per_mm: float,
    scatter: ScatterModel = NO_SCATTER,
) -> DRRSet:
    """One film per trained view, calibrated onto ``geometry``'s detector
    with ``scatter``'s halo taken out, in the model's view order; the films'
    warnings logged."""
    levelled = level_films(films, geometry, angles_deg)
    warn_about(levelled)
    return levelled_to_views(levelled, geometry, mu_water_per_mm, scatter)
