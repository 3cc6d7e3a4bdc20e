"""Geometry-aware 2-D -> 3-D lifting: a learned, multi-channel back-projection.

For each voxel centre of the output grid (a ``CubeGrid`` centred on the
isocentre, RAS+: array axes i -> R, j -> A, k -> S) the lifting finds its
detector position on every view with ``geometry.project_points`` -- the very
function the renderer's rays invert -- and samples that view's feature map
there (bilinear, zeros off the detector). A feature seen at one detector pixel
therefore lands on the voxels of that pixel's ray. Views are fused in one of
two ways (``ModelConfig.view_fusion``):

- "concat": the views' samples side by side in view order, then a 1x1x1 conv.
  The network knows which view each feature came from (for PA + lateral, the
  depth along one view is the width along the other); the weights are tied
  to the number of views.
- "mean_max": the mean and the maximum over views; any number of views at any
  angles works with the same weights, but a feature's view is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ct_pipeline.ct.grid import ORIGIN_MM, CubeGrid
from ct_pipeline.drr.geometry import Geometry, project_points
from ct_pipeline.models.blocks import Pointwise3d


def check_views(views: torch.Tensor, geometry: Geometry) -> None:
    """Raises unless ``views`` is (B, V, rows, columns) of ``geometry``'s detector."""
    rows, cols = geometry.detector_px
    if views.ndim != 4 or tuple(views.shape[2:]) != (rows, cols):
        raise ValueError(
            f"expected views (B, V, {rows}, {cols}), got {tuple(views.shape)}"
        )


def voxel_centres_mm(grid: CubeGrid) -> torch.Tensor:
    """(size^3, 3) RAS+ mm offsets of ``grid``'s voxel centres from its centre,
    in (i, j, k) C order."""
    axis = torch.from_numpy(grid.axis_mm())
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    return points.reshape(-1, 3)


def sampling_grid(
    geometry: Geometry, angles_deg: torch.Tensor, points_mm: torch.Tensor
) -> torch.Tensor:
    """``grid_sample`` coordinates (V, N, 2) as (x = column, y = row) in [-1, 1].

    With align_corners=False, -1 and +1 are the detector's outer edges, so
    (col + 0.5) / W * 2 - 1 is right at every scale whose grid is the detector
    halved s times (feature pixel centres sit at 2^s j + (2^s - 1) / 2).
    """
    rows, cols = geometry.detector_px
    iso = torch.zeros(3, dtype=torch.float64)
    rc = project_points(
        points_mm, geometry, angles_deg.detach().cpu(), iso
    )  # (V, N, 2)
    x = (rc[..., 1] + 0.5) / cols * 2 - 1
    y = (rc[..., 0] + 0.5) / rows * 2 - 1
    return torch.stack([x, y], dim=-1).float()


def sample_views(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """features (B, V, C, h, w), grid (V, N, 2) -> per-view samples (B, V, C, N)."""
    b, v, c, h, w = features.shape
    if grid.shape[0] != v:
        raise ValueError(f"grid has {grid.shape[0]} views, features have {v}")
    flat = features.reshape(b * v, c, h, w)
    g = grid.to(features)[None].expand(b, -1, -1, -1).reshape(b * v, 1, -1, 2)
    out = F.grid_sample(
        flat, g, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.view(b, v, c, -1)


class SamplingGrids:
    """``grid_sample`` coordinates of one voxel grid, cached per angle set and device.

    The grid depends only on the angles, so it is built once per angle set (a
    plain dict, not module state: it is rebuilt on another device or process).
    """

    def __init__(self, geometry: Geometry, grid: CubeGrid) -> None:
        # The rays are traced about an isocentre at the origin; a bundle
        # records only the cube's size and spacing, and a prediction is moved
        # onto its DRR set's isocentre.
        if grid.centre_mm != ORIGIN_MM:
            raise ValueError(
                f"a network's grid is centred on the isocentre {ORIGIN_MM}, got "
                f"{grid.centre_mm}: pass grid.centred(ORIGIN_MM)"
            )
        self.geometry, self.cube = geometry, grid
        self._grids: dict[tuple, torch.Tensor] = {}

    def __call__(self, angles_deg: torch.Tensor, device: torch.device) -> torch.Tensor:
        key = (tuple(round(a, 6) for a in angles_deg.tolist()), str(device))
        if key not in self._grids:
            points = voxel_centres_mm(self.cube)
            self._grids[key] = sampling_grid(self.geometry, angles_deg, points).to(
                device
            )
        return self._grids[key]


class GeometricLifting(nn.Module):
    """Lifts (B, V, C, h, w) view features to (B, C_out, n, n, n) on one grid level."""

    def __init__(
        self,
        geometry: Geometry,
        grid: CubeGrid,
        in_channels: int,
        out_channels: int,
        num_views: int | None = None,
    ) -> None:
        """``num_views`` given: "concat" fusion for exactly that many views; None: "mean_max"."""
        super().__init__()
        if num_views is not None and num_views < 1:
            raise ValueError(f"num_views must be >= 1 or None, got {num_views}")
        self.geometry, self.grid = geometry, grid
        self.num_views = num_views
        fused_in = in_channels * (2 if num_views is None else num_views)
        self.fuse = Pointwise3d(fused_in, out_channels)
        self.sampling = SamplingGrids(geometry, grid)
        # None: all voxels at once. A number: that many voxels at a time, each
        # chunk recomputed in the backward pass (models/memory.py), so the
        # per-view samples (V x C x N floats, GBs at 128^3) never exist whole.
        self.chunk_voxels: int | None = None

    def forward(self, features: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
        b, v = features.shape[:2]
        if self.num_views is not None and v != self.num_views:
            raise ValueError(
                f"this lifting concatenates {self.num_views} views, got {v}"
            )
        grid = self.sampling(angles_deg, features.device)  # (V, N, 2)
        voxels = grid.shape[1]
        chunk = self.chunk_voxels or voxels
        recompute = self.chunk_voxels is not None and torch.is_grad_enabled()
        parts = [
            checkpoint(
                self._lift, features, grid[:, s : s + chunk], use_reentrant=False
            )
            if recompute
            else self._lift(features, grid[:, s : s + chunk])
            for s in range(0, voxels, chunk)
        ]
        fused = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        n = self.grid.size
        return fused.view(b, -1, n, n, n)

    def _lift(self, features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sampled and fused features (B, C_out, N) of the voxels whose grid is given."""
        samples = sample_views(features, grid)  # (B, V, C, N)
        if self.num_views is None:
            stacked = torch.cat([samples.mean(dim=1), samples.amax(dim=1)], dim=1)
        else:
            stacked = samples.reshape(samples.shape[0], -1, samples.shape[-1])
        return self.fuse(stacked)
