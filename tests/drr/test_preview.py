"""Radiograph-like previews: display mapping, labels and the strip of views."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.drr.preview import (
    _edge_letters,
    preview_image,
    preview_strip,
    view_label,
)


def test_preview_image_air_black_attenuation_bright_no_flip():
    p = np.zeros((40, 30), dtype=np.float32)
    p[5:35, 5:25] = 1.0
    p[0:3, 6:9] = 2.0  # a dense feature at the top-left: must stay there
    image = preview_image(p)
    assert image.dtype == np.uint8 and image.shape == (40, 30)
    assert image[39, 29] == 0
    assert image[1, 7] == 255
    assert 0 < image[20, 15] < 255


def test_preview_window_ignores_a_few_outliers():
    p = np.ones((100, 100), dtype=np.float32)
    p[0, 0] = 1000.0  # one pixel of metal
    assert preview_image(p)[50, 50] == 255


def test_preview_image_of_empty_projection_is_black():
    assert preview_image(np.zeros((4, 5))).max() == 0


@pytest.mark.parametrize(
    ("angle", "name", "letters"),
    [
        (0.0, "PA", ("R", "L")),
        (90.0, "left lateral", ("A", "P")),
        (180.0, "AP", ("L", "R")),
        (270.0, "right lateral", ("P", "A")),
        (45.0, "", None),
    ],
)
def test_view_names_and_edge_letters(angle, name, letters):
    assert view_label(angle) == name
    if letters is not None:
        assert _edge_letters(angle) == letters


def test_strip_shows_all_views_side_by_side_under_the_title():
    projections = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    figure = preview_strip(projections, [0.0, 60.0, 120.0], title="patient 1")
    width, height = figure.get_size_inches()
    assert width > 2.5 * height  # three panels side by side
    assert [axis.get_title() for axis in figure.axes] == [
        "0° PA",
        "60°",
        "120°",
    ]
    assert figure.get_suptitle() == "patient 1"


def test_strip_checks_views_against_angles():
    with pytest.raises(ValueError, match="3 angles"):
        preview_strip(np.zeros((2, 8, 8)), [0.0, 1.0, 2.0])
