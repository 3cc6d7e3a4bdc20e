"""Geometry helpers for procedural phantoms: the patient frame on a cube grid,
ellipsoids, tubes along polylines and point splats (all numpy-vectorised)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ct_pipeline.ct.grid import CubeGrid


@dataclass(frozen=True)
class PatientFrame:
    """Where the patient lies in the scanner and how big they are: scaled by
    ``scale``, turned by ``yaw_deg`` about the superior axis, then shifted:
    world = Rz(yaw) @ (scale * patient) + shift_mm.

    Anatomy is drawn for an adult (scale 1); the scale makes the same recipe
    a child or a large adult.

    Turning only about S keeps x and y functions of (i, j) alone and z of k
    alone, so cross-section masks are computed once per slice plane (fast).
    """

    yaw_deg: float
    shift_mm: np.ndarray  # (3,)
    scale: float = 1.0

    @property
    def rotation(self) -> np.ndarray:
        c, s = np.cos(np.deg2rad(self.yaw_deg)), np.sin(np.deg2rad(self.yaw_deg))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def coords(self, grid: CubeGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame x (R), y (A), z (S) in mm of every voxel.

        Shapes (n, n, 1), (n, n, 1), (1, 1, n): they broadcast to the grid.
        """
        axis = grid.axis_mm().astype(np.float32)
        dx = (axis - np.float32(self.shift_mm[0]))[:, None, None]
        dy = (axis - np.float32(self.shift_mm[1]))[None, :, None]
        z = (axis - np.float32(self.shift_mm[2]))[None, None, :]
        r = self.rotation.astype(np.float32) / np.float32(self.scale)
        # p = R^T (world - shift) / scale
        return (
            r[0, 0] * dx + r[1, 0] * dy,
            r[0, 1] * dx + r[1, 1] * dy,
            z / np.float32(self.scale),
        )

    def to_index(self, points_mm: np.ndarray, grid: CubeGrid) -> np.ndarray:
        """Patient-frame points (m, 3) -> fractional voxel indices (m, 3)."""
        world = self.scale * points_mm @ self.rotation.T + self.shift_mm
        return (world - grid.affine[:3, 3]) / grid.spacing_mm


def ellipsoid(
    p: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    semi_axes: np.ndarray,
    axes: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of an ellipsoid; ``axes`` columns are its unit axes (default x, y, z)."""
    d = [p[a] - np.float32(centre[a]) for a in range(3)]
    if axes is not None:
        d = [
            axes[0, k] * d[0] + axes[1, k] * d[1] + axes[2, k] * d[2] for k in range(3)
        ]
    total = (
        (d[0] / semi_axes[0]) ** 2
        + (d[1] / semi_axes[1]) ** 2
        + (d[2] / semi_axes[2]) ** 2
    )
    return total <= 1.0


def densify(polyline: np.ndarray, step_mm: float) -> np.ndarray:
    """Points every <= ``step_mm`` along a polyline (m, 3)."""
    pieces = []
    for start, stop in zip(polyline[:-1], polyline[1:], strict=True):
        count = max(1, int(np.ceil(np.linalg.norm(stop - start) / step_mm)))
        t = np.arange(count)[:, None] / count
        pieces.append(start + t * (stop - start))
    pieces.append(polyline[-1:])
    return np.concatenate(pieces)


def render_tubes(
    grid: CubeGrid,
    frame: PatientFrame,
    tubes: list[tuple[np.ndarray, float, int, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Label volume (-1 outside) of tubes (patient-frame polyline mm, radius mm,
    label, clearance mm), and the mask of voxels within radius + clearance of a tube.

    One Euclidean distance transform serves every tube: each voxel finds its
    nearest centreline voxel and is inside when closer than that tube's radius.
    """
    seeds = np.full((grid.size,) * 3, -1, dtype=np.int32)
    # Distances are measured in the scanner (world mm): scale the patient's.
    radii = frame.scale * np.array([tube[1] for tube in tubes], dtype=np.float32)
    labels = np.array([tube[2] for tube in tubes], dtype=np.int32)
    clearance = frame.scale * np.array([tube[3] for tube in tubes], dtype=np.float32)
    for tube_id in np.argsort(radii, kind="stable"):  # thick tubes win shared voxels
        index = np.rint(
            frame.to_index(
                densify(tubes[tube_id][0], grid.spacing_mm / 2 / frame.scale), grid
            )
        )
        index = index[np.all((index >= 0) & (index < grid.size), axis=1)].astype(int)
        seeds[index[:, 0], index[:, 1], index[:, 2]] = tube_id
    out = np.full(seeds.shape, -1, dtype=np.int32)
    if not (seeds >= 0).any():
        return out, np.zeros(seeds.shape, dtype=bool)
    distance, nearest = ndimage.distance_transform_edt(
        seeds < 0, sampling=grid.spacing_mm, return_indices=True
    )
    tube_id = seeds[nearest[0], nearest[1], nearest[2]]
    inside = distance <= radii[tube_id]
    out[inside] = labels[tube_id[inside]]
    near = distance <= radii[tube_id] + clearance[tube_id]
    return out, near & (clearance[tube_id] > 0)


def splat(
    grid: CubeGrid, frame: PatientFrame, points_mm: np.ndarray, weights: np.ndarray
):
    """Sum ``weights`` of patient-frame points into their nearest voxels."""
    index = np.rint(frame.to_index(points_mm, grid)).astype(int)
    keep = np.all((index >= 0) & (index < grid.size), axis=1)
    flat = np.ravel_multi_index(index[keep].T, (grid.size,) * 3)
    total = np.bincount(flat, weights=weights[keep], minlength=grid.size**3)
    return total.reshape((grid.size,) * 3).astype(np.float32)
