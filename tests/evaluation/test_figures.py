"""Figures: layout, and orientation of the displayed slices."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.drr.preview import preview_image
from ct_pipeline.evaluation.figures import (
    SLICE_EDGES,
    orthogonal_slices,
    slices_figure,
    training_curves_figure,
)

# RAS+ array axes (docs/architecture.md, Conventions): the high end of i, j, k is R, A, S.
HIGH_END = {"R": (0, True), "L": (0, False), "A": (1, True), "P": (1, False)}
HIGH_END |= {"S": (2, True), "I": (2, False)}


def _ras_block_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """Zero volume with a bright block from just below the centre out to the
    patient's right-anterior-superior corner, so every central slice cuts it."""
    volume = np.zeros(shape)
    volume[tuple(slice(n // 2 - 1, n - 1) for n in shape)] = 1.0
    return volume


def test_display_convention_is_radiological() -> None:
    assert SLICE_EDGES["axial"] == ("R", "L", "A", "P")
    assert SLICE_EDGES["coronal"] == ("R", "L", "S", "I")
    assert SLICE_EDGES["sagittal"] == ("A", "P", "S", "I")


def test_slice_shapes_follow_the_display_axes() -> None:
    slices = orthogonal_slices(np.zeros((10, 12, 14)))  # (I, J, K)
    assert slices["axial"].shape == (12, 10)
    assert slices["coronal"].shape == (14, 10)
    assert slices["sagittal"].shape == (14, 12)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_a_right_anterior_superior_block_lands_where_the_labels_say(plane: str) -> None:
    shape = (20, 24, 28)  # non-cubic: a transposed slice would change shape
    image = orthogonal_slices(_ras_block_volume(shape))[plane]
    rows, cols = np.nonzero(image)
    edges = SLICE_EDGES[plane]
    # The block sits at the high end of every RAS axis; its image side is the
    # edge whose label is that high end.
    axis_h, left_is_high = HIGH_END[edges.left]
    axis_v, top_is_high = HIGH_END[edges.top]
    assert (
        cols.mean() < image.shape[1] / 2
        if left_is_high
        else cols.mean() > image.shape[1] / 2
    )
    assert (
        rows.mean() < image.shape[0] / 2
        if top_is_high
        else rows.mean() > image.shape[0] / 2
    )
    # The two axes shown are the two the plane keeps, each once.
    assert {axis_h, axis_v} == {"axial": {0, 1}, "coronal": {0, 2}, "sagittal": {1, 2}}[
        plane
    ]
    # Exact corner: the block touches the image's top-left corner only when
    # R/A/S are on the left and top, which is the radiological convention.
    assert image[1, 1] == 1.0 and image[-1, -1] == 0.0


def test_explicit_centre_selects_the_slices() -> None:
    volume = np.zeros((8, 8, 8))
    volume[:, :, 1] = 5.0
    assert orthogonal_slices(volume, centre=(4, 4, 1))["axial"].max() == 5.0
    assert orthogonal_slices(volume)["axial"].max() == 0.0


@pytest.mark.parametrize("n_views", [2, 8])
def test_slices_figure_has_views_nine_slices_and_two_colorbars(n_views: int) -> None:
    rng = np.random.default_rng(0)
    true_hu = _ras_block_volume((16, 16, 16)) * 1000 - 1000
    pred_hu = true_hu + rng.normal(0, 50, true_hu.shape)
    views = rng.random((n_views, 8, 8))
    fig = slices_figure(
        views, list(np.arange(n_views) * 180.0 / n_views), true_hu, pred_hu, "t"
    )
    images = [ax for ax in fig.axes if ax.images]
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(images) == n_views + 9
    assert len(colorbars) == 2
    assert len(fig.axes) == n_views + 9 + 2
    # The error panels show pred - true through the same orientation.
    error_axial = next(ax for ax in fig.axes if ax.get_title() == "error, axial")
    expected = orthogonal_slices(pred_hu)["axial"] - orthogonal_slices(true_hu)["axial"]
    np.testing.assert_allclose(error_axial.images[0].get_array(), expected)
    assert error_axial.get_xlabel().startswith("R")
    assert error_axial.get_xlabel().endswith("L")
    # The views are shown as the DRR previews are.
    first_view = next(ax for ax in fig.axes if ax.get_title().startswith("0° PA"))
    np.testing.assert_array_equal(
        first_view.images[0].get_array(), preview_image(views[0])
    )


def test_slices_figure_rejects_mismatched_views_and_angles() -> None:
    volume = np.zeros((12, 12, 12))
    with pytest.raises(ValueError, match="V = 3 angles"):
        slices_figure(np.zeros((2, 8, 8)), [0.0, 60.0, 120.0], volume, volume, "t")


def test_training_curves_plot_every_logged_series() -> None:
    history = [
        {"epoch": 1, "train/loss": 1.0, "train/l1": 0.5, "lr": 1e-3},
        {
            "epoch": 2,
            "train/loss": 0.5,
            "train/l1": 0.3,
            "lr": 5e-4,
            "val/psnr_3d": 21.0,
            "val/ssim_3d": 0.6,
        },
        {
            "epoch": 3,
            "train/loss": 0.4,
            "train/l1": 0.2,
            "lr": 1e-4,
            "train/samples_per_s": 9.0,
        },
    ]
    fig = training_curves_figure(history)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.lines}
    assert set(lines) == {"train/loss", "train/l1", "lr", "val/psnr_3d", "val/ssim_3d"}
    assert list(lines["val/psnr_3d"].get_xdata()) == [2.0]
    assert list(lines["train/loss"].get_ydata()) == [1.0, 0.5, 0.4]
    with pytest.raises(ValueError, match="at least one epoch"):
        training_curves_figure([])


def test_training_curves_mark_each_switch_of_resolution() -> None:
    history = [
        {"epoch": e, "train/loss": 1.0 / e, "lr": 1e-3, "resolution": r}
        for e, r in ((1, 16.0), (2, 16.0), (3, 32.0), (4, 32.0))
    ]
    fig = training_curves_figure(history)
    for ax in fig.axes:
        marks = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert [line.get_xdata()[0] for line in marks] == [2.5]
    loss = fig.axes[0]
    assert loss.get_yscale() == "log"
    plain = training_curves_figure(
        [{k: v for k, v in r.items() if k != "resolution"} for r in history]
    )
    assert not any(
        line.get_linestyle() == ":" for ax in plain.axes for line in ax.lines
    )


def test_epochs_recorded_before_the_resolution_key_mark_no_switch() -> None:
    """A run recorded without ``resolution``, resumed by a version that
    records it: one grid throughout, so no switch at the resume."""
    history = [
        {"epoch": e, "train/loss": 1.0 / e, "lr": 1e-3}
        | ({"resolution": 32.0} if e > 2 else {})
        for e in range(1, 5)
    ]
    fig = training_curves_figure(history)
    assert not any(line.get_linestyle() == ":" for ax in fig.axes for line in ax.lines)
