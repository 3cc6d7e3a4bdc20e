"""Figures for people to judge reconstructions and training runs.

Every function returns a bare ``matplotlib.figure.Figure``: no pyplot, so no
GUI backend, no global figure registry to leak into, and nothing to close;
callers save it (a catalogued MatplotlibWriter or an MLflow artifact).

Display convention of the CT slices (radiological, as PACS and 3D Slicer show
them), from RAS+ volumes indexed (i, j, k) = (Right, Anterior, Superior):

- axial: seen from the feet, patient's right on the image's left, anterior up;
- coronal: seen from the front, patient's right on the image's left, superior up;
- sagittal: seen from the patient's left, anterior on the image's left, superior up.

``SLICE_EDGES`` states which patient direction lies at each image edge; the
axis labels are made from it and the tests check the pixels against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from ct_pipeline.drr.preview import mark_sides, preview_image, view_label
from ct_pipeline.losses import DEFAULT_WEIGHTS
from ct_pipeline.radiographs import Film
from ct_pipeline.training.resolution import RESOLUTION

# Greyscale window for CT slices: air to dense bone, lung and soft tissue apart.
CT_DISPLAY_WINDOW_HU = (-1000.0, 1000.0)
ERROR_CMAP = "RdBu_r"  # red: reconstruction too dense, blue: too light


class Edges(NamedTuple):
    """Patient direction at each edge of a displayed slice."""

    left: str
    right: str
    top: str
    bottom: str


SLICE_EDGES: dict[str, Edges] = {
    "axial": Edges(left="R", right="L", top="A", bottom="P"),
    "coronal": Edges(left="R", right="L", top="S", bottom="I"),
    "sagittal": Edges(left="A", right="P", top="S", bottom="I"),
}


def orthogonal_slices(
    volume: np.ndarray, centre: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal slices through ``centre`` (default: the
    central voxel) of a RAS+ (I, J, K) volume, oriented for ``imshow`` with
    ``origin="upper"`` as ``SLICE_EDGES`` says.

    Shapes: axial (J, I), coronal (K, I), sagittal (K, J). Each 2-D cut (a, b)
    is transposed so b runs down the rows, then flipped on both axes, because
    in every view the image's left and top are the high ends of the RAS axes
    (R or A, and A or S).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D (I, J, K) volume, got shape {volume.shape}")
    i, j, k = (n // 2 for n in volume.shape) if centre is None else centre
    cuts = {
        "axial": volume[:, :, k],  # (I, J)
        "coronal": volume[:, j, :],  # (I, K)
        "sagittal": volume[i, :, :],  # (J, K)
    }
    return {name: cut.T[::-1, ::-1] for name, cut in cuts.items()}


def label_edges(ax, edges: Edges) -> None:
    # Arrows point away from the centre toward the named edge.
    ax.set_xlabel(f"{edges.left} \u2190   \u2192 {edges.right}", fontsize=8)
    ax.set_ylabel(f"{edges.bottom} \u2190   \u2192 {edges.top}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def slices_figure(
    views: np.ndarray,
    angles_deg: Sequence[float],
    true_hu: np.ndarray,
    pred_hu: np.ndarray,
    title: str,
    display_window_hu: tuple[float, float] = CT_DISPLAY_WINDOW_HU,
) -> Figure:
    """The input views above a 3 x 3 grid: rows ground truth, reconstruction,
    error (pred - true, HU); columns axial, coronal, sagittal central slices.

    ``views`` are (V, H, W) line integrals (detector rows superior -> inferior,
    so they display head up as they are).
    """
    views = np.asarray(views)
    true_hu, pred_hu = np.asarray(true_hu), np.asarray(pred_hu)
    if views.ndim != 3 or views.shape[0] != len(angles_deg):
        raise ValueError(
            f"views must be (V, H, W) with V = {len(angles_deg)} angles, got {views.shape}"
        )
    if true_hu.ndim != 3 or true_hu.shape != pred_hu.shape:
        raise ValueError(
            f"true_hu and pred_hu must be equal 3-D volumes, got {true_hu.shape} and {pred_hu.shape}"
        )
    n_views = views.shape[0]
    fig = Figure(figsize=(max(8.0, 1.6 * n_views), 11.0), layout="constrained")
    fig.suptitle(title)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 3.6])  # type: ignore[misc]

    top.suptitle("input views (radiograph display, head up)", fontsize=9)
    for ax, view, angle in zip(
        np.atleast_1d(top.subplots(1, n_views)), views, angles_deg, strict=True
    ):
        ax.imshow(preview_image(view), cmap="gray", vmin=0, vmax=255)
        name = view_label(float(angle))
        ax.set_title(f"{float(angle):g}°" + (f" {name}" if name else ""), fontsize=8)
        ax.set_axis_off()
        mark_sides(ax, float(angle))

    truth, recon = orthogonal_slices(true_hu), orthogonal_slices(pred_hu)
    errors = {name: recon[name] - truth[name] for name in truth}
    # Symmetric colour range so zero error is white; never degenerate.
    error_max = max(1.0, max(float(np.abs(e).max()) for e in errors.values()))
    axes = bottom.subplots(3, 3)
    rows = (("ground truth", truth), ("reconstruction", recon), ("error", errors))
    for r, (row_name, slices) in enumerate(rows):
        for c, plane in enumerate(SLICE_EDGES):
            ax = axes[r, c]
            if row_name == "error":
                image = ax.imshow(
                    slices[plane], cmap=ERROR_CMAP, vmin=-error_max, vmax=error_max
                )
            else:
                image = ax.imshow(
                    slices[plane],
                    cmap="gray",
                    vmin=display_window_hu[0],
                    vmax=display_window_hu[1],
                )
            label_edges(ax, SLICE_EDGES[plane])
            ax.set_title(f"{row_name}, {plane}", fontsize=9)
        if row_name == "error":
            bottom.colorbar(image, ax=axes[r], label="pred - true (HU)", shrink=0.9)
        elif r == 0:
            bottom.colorbar(image, ax=axes[:2], label="HU", shrink=0.6)
    return fig


def _show_film(ax, film: Film) -> None:
    """The film's values as stored, air dark, with its PatientOrientation
    letters at the edges they name (and their opposites)."""
    opposite = dict(zip("LRAPHF", "RLPAFH", strict=True))
    along_cols, along_rows = (code.strip().upper() for code in film.orientation)
    ax.imshow(film.values, cmap="gray_r" if film.rises_with_exposure else "gray")
    for x, y, text in (
        (0.03, 0.5, "".join(opposite.get(c, "?") for c in along_cols)),
        (0.97, 0.5, along_cols),
        (0.5, 0.97, "".join(opposite.get(c, "?") for c in along_rows)),
        (0.5, 0.03, along_rows),
    ):
        ax.text(
            x, y, text, transform=ax.transAxes, color="yellow", fontsize=9,
            ha="center", va="center", fontweight="bold",
        )  # fmt: skip
    ax.set_axis_off()


def radiograph_figure(
    films: Sequence[Film],
    views: np.ndarray,
    reprojections: np.ndarray,
    angles_deg: Sequence[float],
    volume_hu: np.ndarray,
    title: str,
    display_window_hu: tuple[float, float] = CT_DISPLAY_WINDOW_HU,
) -> Figure:
    """What ``predict`` made of a patient's films, one row each: the films as
    stored (PatientOrientation letters at their edges), the calibrated views
    (radiograph display, head up), the reconstruction's reprojections (drawn
    with the views' own display window, so a mismatch shows as a difference
    in brightness), and axial / coronal / sagittal slices of the volume.
    Without films (a DRR set) the first row is left out and the views are
    the input ones."""
    views, reprojections = np.asarray(views), np.asarray(reprojections)
    if views.shape != reprojections.shape or views.shape[0] != len(angles_deg):
        raise ValueError(
            f"views {views.shape} and reprojections {reprojections.shape} must "
            f"both be (V, H, W) with V = {len(angles_deg)} angles"
        )
    film_rows = 1 if films else 0
    n = max(len(films), len(angles_deg), 3)
    # 80 dpi, the resolution it is written at: one figure per patient stays small.
    fig = Figure(figsize=(2.6 * n, 2.6 * (3 + film_rows)), layout="constrained", dpi=80)
    fig.suptitle(title)
    axes = fig.subplots(3 + film_rows, n, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, film in zip(axes[0], films, strict=False):
        _show_film(ax, film)
        ax.set_title(f"as stored: {film.source.rsplit('/', 1)[-1]}", fontsize=8)
    views_label = "calibrated" if films else "input"
    for k, angle in enumerate(angles_deg):
        high = float(np.percentile(views[k], 99.5)) or 1.0
        name = view_label(float(angle))
        for row, (what, image) in enumerate(
            ((views_label, views[k]), ("reprojected", reprojections[k])),
            start=film_rows,
        ):
            ax = axes[row, k]
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=high)
            ax.set_title(f"{what}, {float(angle):g}° {name}", fontsize=8)
            mark_sides(ax, float(angle))
    for ax, (plane, image) in zip(
        axes[-1], orthogonal_slices(volume_hu).items(), strict=False
    ):
        ax.set_axis_on()
        ax.imshow(
            image, cmap="gray", vmin=display_window_hu[0], vmax=display_window_hu[1]
        )
        label_edges(ax, SLICE_EDGES[plane])
        ax.set_title(f"reconstruction, {plane}", fontsize=8)
    return fig


def training_curves_figure(
    history: Sequence[Mapping[str, float]], title: str | None = None
) -> Figure:
    """Four panels against epoch: the loss and its terms (``train/loss`` and
    ``train/<term>``, log scale), validation PSNR and SSIM (``val/*psnr*``,
    ``val/*ssim*``, which may be logged only every few epochs) and ``lr``.
    A dotted line marks each switch of ``resolution`` (voxels per side) of a
    resolution schedule: the scores before it are against a coarser target."""
    if not history:
        raise ValueError("training_curves_figure needs at least one epoch, got none")
    epochs = [float(row.get("epoch", n + 1)) for n, row in enumerate(history)]
    keys = {key for row in history for key in row}
    # Between epochs that both record it: those of a run recorded before the
    # key existed, then resumed, lack it, and trained on one grid throughout.
    switches = [
        epoch - 0.5
        for epoch, row, previous in zip(
            epochs[1:], history[1:], history[:-1], strict=True
        )
        if RESOLUTION in row
        and RESOLUTION in previous
        and row[RESOLUTION] != previous[RESOLUTION]
    ]
    panels = {
        "loss (train)": ["train/loss"] + [f"train/{term}" for term in DEFAULT_WEIGHTS],
        "PSNR (dB)": sorted(k for k in keys if k.startswith("val/") and "psnr" in k),
        "SSIM": sorted(k for k in keys if k.startswith("val/") and "ssim" in k),
        "learning rate": ["lr"],
    }
    fig = Figure(figsize=(11.0, 7.0), layout="constrained")
    if title:
        fig.suptitle(title)
    for ax, (panel, names) in zip(fig.subplots(2, 2).flat, panels.items(), strict=True):
        for name in names:
            points = [
                (epoch, float(row[name]))
                for epoch, row in zip(epochs, history, strict=True)
                if name in row
            ]
            if points:
                x, y = zip(*points, strict=True)
                lw = 2.0 if name == "train/loss" else 1.0
                ax.plot(x, y, marker="o", markersize=3, linewidth=lw, label=name)
        if panel in ("loss (train)", "learning rate") and ax.lines:
            if all(v > 0 for line in ax.lines for v in line.get_ydata()):
                ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(
                0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes
            )
        for switch in switches:  # after the checks above, which read ax.lines
            ax.axvline(switch, color="0.5", linestyle=":", linewidth=1.0)
    return fig
