"""Real radiographs in: DICOM DX/CR/RF/XA films and PNG/TIFF + JSON sidecar,
calibrated to line integrals on a model's detector."""

from ct_pipeline.radiographs.calibrate import (
    LevelledFilm,
    calibrate,
    calibrate_levelled,
    warn_about,
)
from ct_pipeline.radiographs.dicom import read_dicom_film
from ct_pipeline.radiographs.files import find_patients, read_film, read_films
from ct_pipeline.radiographs.film import Film, RadiographError
from ct_pipeline.radiographs.scatter import (
    NO_SCATTER,
    ScatterModel,
    remove_scatter,
)
from ct_pipeline.radiographs.sidecar import read_image_film
from ct_pipeline.radiographs.views import (
    films_to_views,
    level_films,
    levelled_to_views,
    match_view,
)
from ct_pipeline.radiographs.writing import (
    dicom_film,
    write_dicom_film,
    write_image_film,
)

__all__ = [
    "NO_SCATTER",
    "Film",
    "LevelledFilm",
    "RadiographError",
    "ScatterModel",
    "calibrate",
    "calibrate_levelled",
    "dicom_film",
    "films_to_views",
    "find_patients",
    "level_films",
    "levelled_to_views",
    "match_view",
    "read_dicom_film",
    "read_film",
    "read_films",
    "read_image_film",
    "remove_scatter",
    "warn_about",
    "write_dicom_film",
    "write_image_film",
]
