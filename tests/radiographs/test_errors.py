"""Every malformed film gets an error naming the file and what was wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest
from films import ANGLES, MODEL, render, write_dx, write_png

from ct_pipeline.radiographs import (
    RadiographError,
    films_to_views,
    find_patients,
    read_film,
)


@pytest.fixture(scope="module")
def pa() -> np.ndarray:
    return render(0.0)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"drop": ("DistanceSourceToDetector",)}, "lacks DistanceSourceToDetector"),
        ({"drop": ("DistanceSourceToPatient",)}, "lacks DistanceSourceToPatient"),
        ({"drop": ("ImagerPixelSpacing",)}, "lacks ImagerPixelSpacing"),
        ({"drop": ("PatientOrientation",)}, "lacks PatientOrientation"),
        # A MONOCHROME2 log image without its tag: LIN or LOG cannot be told.
        (
            {
                "photometric": "MONOCHROME2",
                "relationship": "LOG",
                "drop": ("PixelIntensityRelationship",),
            },
            "lacks PixelIntensityRelationship",
        ),
        ({"drop": ("ViewPosition",)}, "lacks ViewPosition"),
        ({"ViewPosition": "LATERAL"}, "ViewPosition 'LATERAL' is not one of"),
        ({"frames": 3}, "NumberOfFrames is 3"),
        ({"Modality": "CT"}, "Modality CT is not a radiograph"),
        ({"PixelIntensityRelationshipSign": 2}, "PixelIntensityRelationshipSign 2"),
        (
            {
                "PixelSpacing": [12.0, 12.0],
                "EstimatedRadiographicMagnificationFactor": 1.5,
            },
            None,  # consistent with ImagerPixelSpacing 18 mm: read fine
        ),
        (
            {
                "PixelSpacing": [9.0, 9.0],
                "EstimatedRadiographicMagnificationFactor": 1.2,
            },
            "ImagerPixelSpacing [18.0, 18.0] disagrees with PixelSpacing",
        ),
        (
            {"PositionerPrimaryAngle": 90.0},
            "ViewPosition PA (0 deg) disagrees with PositionerPrimaryAngle 90",
        ),
        ({"DistanceSourceToPatient": 2000.0}, "source-isocentre < source-detector"),
    ],
)
def test_malformed_dicom(tmp_path, pa, tags, message):
    path = write_dx(tmp_path / "film.dcm", pa, **tags)
    if message is None:
        assert read_film(path).pixel_mm == (18.0, 18.0)
        return
    with pytest.raises(RadiographError, match=re.escape(message)) as error:
        read_film(path)
    assert str(path) in str(error.value)


def test_orientation_that_does_not_fit_the_view(tmp_path, pa):
    # "A" is the PA beam's own direction: no detector axis runs along it.
    film = read_film(write_dx(tmp_path / "pa.dcm", pa, PatientOrientation=["A", "F"]))
    lateral = read_film(write_dx(tmp_path / "ll.dcm", render(90.0), 90.0))
    with pytest.raises(RadiographError, match=r"pa\.dcm.*does not fit a view at 0"):
        films_to_views([film, lateral], MODEL, ANGLES, 0.02)


def test_a_view_the_model_does_not_know_lists_the_known_ones(tmp_path, pa):
    film = read_film(write_dx(tmp_path / "oblique.dcm", pa, 45.0))
    with pytest.raises(
        RadiographError,
        match=r"oblique\.dcm.*not trained for a view at 45 deg.*\[0\.0, 90\.0\]",
    ):
        films_to_views([film], MODEL, ANGLES, 0.02)


def test_missing_and_duplicate_views(tmp_path, pa):
    one = read_film(write_dx(tmp_path / "a.dcm", pa))
    two = read_film(write_dx(tmp_path / "b.dcm", pa))
    with pytest.raises(RadiographError, match=r"a\.dcm.*nothing provides \[90\.0\]"):
        films_to_views([one], MODEL, ANGLES, 0.02)
    with pytest.raises(
        RadiographError, match=r"b\.dcm and .*a\.dcm are both the 0 deg"
    ):
        films_to_views([one, two], MODEL, ANGLES, 0.02)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"sdd_mm": None}, r"p\.json: lacks sdd_mm"),
        ({"view": None}, "lacks view or view_angle_deg"),
        ({"view_angle_deg": 90}, "lacks view or view_angle_deg"),
        ({"values": "counts"}, "values must be 'intensity' or 'log'"),
        ({"pixel_mm": "0.2"}, "pixel_mm must be a number"),
        ({"view": "OBLIQUE"}, "view 'OBLIQUE' is not one of"),
    ],
)
def test_malformed_sidecar(tmp_path, pa, meta, message):
    path = write_png(tmp_path / "p.png", pa, **meta)
    with pytest.raises(RadiographError, match=message):
        read_film(path)


def test_image_without_sidecar_or_in_colour(tmp_path, pa):
    from PIL import Image

    path = write_png(tmp_path / "p.png", pa)
    path.with_suffix(".json").unlink()
    with pytest.raises(RadiographError, match=r"p\.png: no sidecar p\.json"):
        read_film(path)
    grey = write_png(tmp_path / "c.png", pa)
    Image.new("RGB", (8, 8)).save(grey)
    with pytest.raises(
        RadiographError, match=r"c\.png: needs an 8 or 16 bit grayscale"
    ):
        read_film(grey)


def test_patients_are_folders_or_loose_files_sharing_a_stem(tmp_path, pa):
    write_dx(tmp_path / "anna_pa.dcm", pa)
    write_png(tmp_path / "anna_lat.png", pa)
    (tmp_path / "bob").mkdir()
    write_dx(tmp_path / "bob" / "1.dcm", pa)
    (tmp_path / "notes.txt").write_text("x")
    patients = find_patients(tmp_path)
    assert {k: [p.name for p in v] for k, v in patients.items()} == {
        "anna": ["anna_lat.png", "anna_pa.dcm"],
        "bob": ["1.dcm"],
    }
    assert find_patients(tmp_path / "absent") == {}
