"""Radiograph-like previews of DRRs for people to look at.

Display follows a film read on a light box: attenuation is bright and the
grey level is linear in the line integral p (film density is proportional to
log exposure), windowed robustly so one dense marker does not wash out the
anatomy. Rows already run superior -> inferior, so the head is
at the top without flipping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ct_pipeline.drr.geometry import view_frames

# Upper window edge: a high percentile of the line integrals, so a few
# saturating pixels (metal, a marker) do not compress the rest of the image.
_WINDOW_PERCENTILE = 99.5

# Letters of the RAS+ world axes, for orientation markers at the image edges.
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


def preview_image(projection: np.ndarray) -> np.ndarray:
    """uint8 (H, W) display of one line-integral image: air black, bone bright."""
    if projection.ndim != 2:
        raise ValueError(f"projection must be (H, W), got shape {projection.shape}")
    p = np.nan_to_num(projection.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    high = float(np.percentile(p, _WINDOW_PERCENTILE))
    if high <= 0:
        return np.zeros(p.shape, dtype=np.uint8)
    # The lower edge is air (p = 0) so that the body outline stays visible.
    return np.round(np.clip(p / high, 0.0, 1.0) * 255).astype(np.uint8)


def view_label(angle_deg: float) -> str:
    """'PA', 'AP', 'left lateral', 'right lateral' or '' for oblique views."""
    names = {0: "PA", 90: "left lateral", 180: "AP", 270: "right lateral"}
    wrapped = angle_deg % 360.0
    for angle, name in names.items():
        if min(abs(wrapped - angle), 360.0 - abs(wrapped - angle)) < 1e-6:
            return name
    return ""


def _edge_letters(angle_deg: float) -> tuple[str, str]:
    """World directions at the image's left and right edges (along -u and +u)."""
    _, frames_u, _ = view_frames(torch.tensor([angle_deg]))
    u = frames_u[0].numpy()
    axis = int(np.argmax(np.abs(u)))
    toward_right = _AXIS_LETTERS[axis][1] if u[axis] > 0 else _AXIS_LETTERS[axis][0]
    toward_left = _AXIS_LETTERS[axis][0] if u[axis] > 0 else _AXIS_LETTERS[axis][1]
    return toward_left, toward_right


def mark_sides(axis: Axes, angle_deg: float) -> None:
    """The world axis closest to the image's horizontal, at both edges of a view:
    PA shows 'R' on the left as a chest film is read, lateral 'A' / 'P'."""
    left, right = _edge_letters(angle_deg)
    for x, letter, align in ((0.03, left, "left"), (0.97, right, "right")):
        axis.text(
            x, 0.96, letter, transform=axis.transAxes, color="yellow", fontsize=9,
            ha=align, va="top", fontweight="bold",
        )  # fmt: skip


def preview_figure(
    rows: Sequence[tuple[str, np.ndarray, Sequence[float]]],
) -> Figure:
    """One labelled strip of views per (title, projections (V, H, W), angles)
    row: angle, view name and side markers on every view."""
    for title, projections, angles_deg in rows:
        if projections.ndim != 3 or projections.shape[0] != len(angles_deg):
            raise ValueError(
                f"{title}: projections must be (V, H, W) with V = {len(angles_deg)} "
                f"angles, got shape {projections.shape}"
            )
    views = max(projections.shape[0] for _, projections, _ in rows)
    # A bare Figure (no pyplot): no GUI backend, no global state, nothing to close.
    figure = Figure(figsize=(2.6 * views, 3.0 * len(rows)), layout="tight")
    axes = figure.subplots(len(rows), views, squeeze=False)
    for row_axes, (title, projections, angles_deg) in zip(axes, rows, strict=True):
        for axis in row_axes[len(angles_deg) :]:
            axis.set_axis_off()
        for axis, image, angle in zip(row_axes, projections, angles_deg, strict=False):
            axis.imshow(preview_image(image), cmap="gray", vmin=0, vmax=255)
            name = view_label(float(angle))
            label = f"{float(angle):g}°" + (f" {name}" if name else "")
            axis.set_title(f"{title}: {label}" if len(rows) > 1 else label, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
            mark_sides(axis, float(angle))
    return figure


def preview_strip(
    projections: np.ndarray, angles_deg: Sequence[float], title: str | None = None
) -> Figure:
    """A labelled strip of the views (V, H, W): angle, view name, side markers."""
    figure = preview_figure([(title or "", projections, angles_deg)])
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
