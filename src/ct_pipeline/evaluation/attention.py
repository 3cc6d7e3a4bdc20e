"""A readable picture of the hybrid's attention for one patient.

Raw weights are token-by-token matrices nobody can read. This shows them
where they act:

- cross-view attention: for three points on the middle row of the first view,
  where in the next view they look (head mean, drawn over that view's DRR);
- Swin attention: how much attention each voxel receives within its window
  (head and query mean), on a coronal slice of the patient's CT.

Both are in multiples of uniform attention (1 = every allowed token alike),
so a flat map reads as "learned nothing yet" and a peaked one as "looks here".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ct_pipeline.drr.preview import mark_sides, preview_image, view_label
from ct_pipeline.evaluation.figures import (
    CT_DISPLAY_WINDOW_HU,
    SLICE_EDGES,
    label_edges,
    orthogonal_slices,
)
from ct_pipeline.models.cross_view import CrossViewAttention
from ct_pipeline.models.swin3d import SwinBlock3d, window_reverse
from ct_pipeline.models.unet3d import LEVELS

ATTENTION_CMAP = "magma"
QUERY_COLOURS = ("cyan", "lime", "yellow")


def cross_view_looks(
    weights: torch.Tensor, views: int, grid: tuple[int, int], queries: Sequence[int]
) -> list[np.ndarray]:
    """Attention of first-view tokens ``queries`` over the second view, (h, w) each.

    ``weights`` (B, heads, V*h*w, V*h*w), tokens view-major then row-major.
    """
    h, w = grid
    mean = weights[0].float().mean(dim=0)  # (T, T)
    # A token attends to the (V - 1) h w tokens of the other views.
    uniform = 1.0 / ((views - 1) * h * w) if views > 1 else 1.0 / (h * w)
    key_view = 1 if views > 1 else 0
    keys = slice(key_view * h * w, (key_view + 1) * h * w)
    return [(mean[q, keys] / uniform).reshape(h, w).cpu().numpy() for q in queries]


def swin_received(weights: torch.Tensor, block: SwinBlock3d) -> np.ndarray:
    """Attention each voxel of ``block``'s grid receives in its window, x uniform.

    ``weights`` (B * windows, heads, N, N); the first batch item's windows are
    mapped back to the grid (and the cyclic shift undone).
    """
    grid, window = block.grid, block.window
    windows = int(np.prod([g // s for g, s in zip(grid, window, strict=True)]))
    n = weights.shape[-1]
    received = weights[:windows].float().mean(dim=(1, 2)) * n  # (windows, N)
    volume = window_reverse(received[..., None], window, grid)[0, ..., 0]
    if any(block.shift):
        volume = torch.roll(volume, list(block.shift), dims=(0, 1, 2))
    return volume.cpu().numpy()


def _stage(name: str) -> str:
    """ "encoder", "decoder" or "bottleneck" for a module path in the 3-D U-Net."""
    found = re.search(r"\.(encoder|decoder)s\.(\d+)\.", name)
    if found is None:
        return "U-Net"
    if found[1] == "encoder" and int(found[2]) == LEVELS - 1:
        return "bottleneck"
    return found[1]


def _upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape[0] // image.shape[0], shape[1] // image.shape[1]
    return np.kron(image, np.ones((rows, cols)))


def attention_figure(
    model: nn.Module,
    maps: Mapping[str, torch.Tensor],
    projections: np.ndarray,
    angles_deg: Sequence[float],
    truth_hu: np.ndarray,
    patient: str,
) -> Figure:
    """Cross-view looks (top row) and Swin attention per level (bottom row)."""
    modules = dict(model.named_modules())
    cross = [n for n in maps if isinstance(modules.get(n), CrossViewAttention)]
    # The first (unshifted) block of each Swin stage: one map per level.
    swin = [
        n
        for n in maps
        if n.endswith(".attn")
        and isinstance(modules.get(n[: -len(".attn")]), SwinBlock3d)
        and n[: -len(".attn")].endswith("blocks.0")
    ]
    columns = 4
    figure = Figure(figsize=(3.2 * columns, 6.8), layout="constrained")
    figure.suptitle(f"{patient}: where the attention goes (1 = uniform)")
    axes = figure.subplots(2, columns)
    for ax in axes.flat:
        ax.set_axis_off()
    views = projections.shape[0]

    def title(angle: float) -> str:
        label = view_label(angle)
        return f"{angle:g}\u00b0" + (f" ({label})" if label else "")

    if cross:
        weights = maps[cross[0]]
        tokens = weights.shape[-1] // views
        rows, cols = projections.shape[1:]
        h = int(round((tokens * rows / cols) ** 0.5))
        w = tokens // h
        queries = [(h // 2) * w + c for c in (w // 4, w // 2, (3 * w) // 4)]
        looks = cross_view_looks(weights, views, (h, w), queries)
        axes[0, 0].imshow(preview_image(projections[0]), cmap="gray")
        mark_sides(axes[0, 0], angles_deg[0])
        for q, colour in zip(queries, QUERY_COLOURS, strict=True):
            r, c = divmod(q, w)
            axes[0, 0].plot(
                (c + 0.5) * cols / w, (r + 0.5) * rows / h, "o", color=colour, ms=8
            )
        axes[0, 0].set_title(f"query points, view {title(angles_deg[0])}", fontsize=9)
        key = 1 if views > 1 else 0
        for ax, look, colour in zip(axes[0, 1:], looks, QUERY_COLOURS, strict=True):
            ax.imshow(preview_image(projections[key]), cmap="gray")
            mark_sides(ax, angles_deg[key])
            image = ax.imshow(
                _upsample(look, (rows, cols)), cmap=ATTENTION_CMAP, alpha=0.6
            )
            ax.set_title(
                f"{colour} point looks at, view {title(angles_deg[key])}", fontsize=9
            )
            figure.colorbar(image, ax=ax, shrink=0.7)
    else:
        axes[0, 0].text(0, 0.5, "no cross-view attention in this model")

    coronal = orthogonal_slices(truth_hu)["coronal"]
    axes[1, 0].set_axis_on()
    axes[1, 0].imshow(
        coronal, cmap="gray", vmin=CT_DISPLAY_WINDOW_HU[0], vmax=CT_DISPLAY_WINDOW_HU[1]
    )
    axes[1, 0].set_title("CT, coronal", fontsize=9)
    label_edges(axes[1, 0], SLICE_EDGES["coronal"])
    for ax, name in zip(axes[1, 1:], swin, strict=False):
        block = modules[name[: -len(".attn")]]
        assert isinstance(block, SwinBlock3d)
        received = orthogonal_slices(swin_received(maps[name], block))["coronal"]
        ax.set_axis_on()
        ax.imshow(
            coronal,
            cmap="gray",
            vmin=CT_DISPLAY_WINDOW_HU[0],
            vmax=CT_DISPLAY_WINDOW_HU[1],
        )
        image = ax.imshow(
            _upsample(received, coronal.shape), cmap=ATTENTION_CMAP, alpha=0.6
        )
        stage = _stage(name)
        ax.set_title(f"Swin, {stage} at {block.grid[0]}\u00b3: received", fontsize=9)
        label_edges(ax, SLICE_EDGES["coronal"])
        figure.colorbar(image, ax=ax, shrink=0.7)
    if not swin:
        axes[1, 1].text(0, 0.5, "no Swin attention in this model")
    return figure
