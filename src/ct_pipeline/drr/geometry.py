"""Imaging geometry: where the source, the detector and each pixel are.

Conventions are fixed project-wide (README, Conventions; RAS+ mm world frame):

- views rotate about the superior axis through the isocentre; the central ray
  of view theta points along d(theta) = (-sin theta, cos theta, 0), so
  theta = 0 is PA (source posterior, detector anterior) and theta = 90 is a
  left lateral (beam right -> left);
- detector rows run superior -> inferior (v = -S, head at the top) and columns
  along u = d x v (theta = 0: toward the patient's left);
- pixel centres sit at (index - (n - 1) / 2) * pixel_mm along each axis.

Both the renderer and the network's 2-D -> 3-D lifting use these functions, so
a feature seen at a detector pixel lands on exactly the voxels of its ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

Beam = Literal["cone", "parallel"]


@dataclass(frozen=True)
class Geometry:
    """Source, detector and beam of one acquisition (all distances in mm).

    For a parallel beam the source distances only place the ray origins
    outside the volume.

    Args:
        sad_mm: Source to isocentre (axis) distance; 0 < sad_mm < sdd_mm.
        sdd_mm: Source to detector distance.
        detector_px: Detector (rows, columns) = (H, W); an int means square.
        pixel_mm: Detector pixel pitch, > 0.
        beam: ``"cone"`` (point source) or ``"parallel"``.

    Raises:
        ValueError: A value is not finite, out of range or of the wrong shape.
    """

    sad_mm: float = 1000.0
    sdd_mm: float = 1500.0
    detector_px: tuple[int, int] = (64, 64)
    pixel_mm: float = 9.0
    beam: Beam = "cone"

    def __post_init__(self) -> None:
        if isinstance(self.detector_px, int):
            object.__setattr__(self, "detector_px", (self.detector_px,) * 2)
        object.__setattr__(self, "detector_px", tuple(int(n) for n in self.detector_px))
        if len(self.detector_px) != 2 or min(self.detector_px) < 1:
            raise ValueError(
                f"detector_px must be (rows, cols) >= 1, got {self.detector_px}"
            )
        for name in ("sad_mm", "sdd_mm", "pixel_mm"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.beam not in ("cone", "parallel"):
            raise ValueError(f"beam must be 'cone' or 'parallel', got {self.beam!r}")
        if not 0 < self.sad_mm < self.sdd_mm:
            raise ValueError(
                f"need 0 < sad_mm < sdd_mm, got sad_mm={self.sad_mm}, sdd_mm={self.sdd_mm}"
            )
        if self.pixel_mm <= 0:
            raise ValueError(f"pixel_mm must be > 0, got {self.pixel_mm}")

    @property
    def magnification(self) -> float:
        """Detector-plane size of an object at the isocentre, per mm."""
        return self.sdd_mm / self.sad_mm if self.beam == "cone" else 1.0

    def binned(self, factor: int) -> Geometry:
        """The detector read out in ``factor`` x ``factor`` blocks of pixels:
        each block one pixel of ``factor`` times the pitch, centred where the
        block's pixels are (the same field, the same rays)."""
        rows, cols = self.detector_px
        if factor < 1 or rows % factor or cols % factor:
            raise ValueError(
                f"a {rows} x {cols} detector cannot be binned in blocks of {factor} pixels"
            )
        return replace(
            self,
            detector_px=(rows // factor, cols // factor),
            pixel_mm=self.pixel_mm * factor,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detector_px": list(self.detector_px)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(**{**data, "detector_px": tuple(data["detector_px"])})


def default_angles(num_views: int) -> list[float]:
    """theta_k = k * 180 / N: N views spread over half a turn."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    return [k * 180.0 / num_views for k in range(num_views)]


def resolve_angles(
    num_views: int | None, angles_deg: Sequence[float] | None
) -> list[float]:
    """The view angles: explicit ``angles_deg``, else default_angles(num_views).

    The one resolver of the project: the DRR stage (views to render) and
    training (views to learn from) refuse the same contradictions alike.
    """
    if angles_deg is not None:
        angles = [float(a) for a in angles_deg]
        if not angles:
            raise ValueError("angles_deg must list at least one angle, got []")
        if not all(math.isfinite(a) for a in angles):
            raise ValueError(f"angles_deg must be finite numbers, got {angles}")
        if num_views is not None and num_views != len(angles):
            raise ValueError(
                f"num_views={num_views} disagrees with {len(angles)} angles_deg {angles}"
            )
        return angles
    if num_views is None:
        raise ValueError("give num_views or angles_deg, got neither")
    return default_angles(num_views)


def view_frames(
    angles_deg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit vectors (d, u, v), each (V, 3), of the views at ``angles_deg`` (V,)."""
    theta = torch.deg2rad(angles_deg.to(torch.float64))
    zeros = torch.zeros_like(theta)
    d = torch.stack([-torch.sin(theta), torch.cos(theta), zeros], dim=-1)
    v = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(d)
    u = torch.linalg.cross(d, v, dim=-1)
    return d, u, v


def detector_offsets_mm(geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre offsets from the detector centre: rows (H,) and columns (W,)."""
    rows, cols = geometry.detector_px
    r = (torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2) * geometry.pixel_mm
    c = (torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2) * geometry.pixel_mm
    return r, c


def rays(
    geometry: Geometry, angles_deg: torch.Tensor, isocentre_mm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and end points in RAS+ mm, each (V, H, W, 3), float64.

    Cone beam: every ray starts at the source, iso - sad * d, and ends at its
    pixel on the detector plane, iso + (sdd - sad) * d + offsets. Parallel beam:
    each ray runs along d from sdd mm before its pixel to the pixel.
    """
    d, u, v = view_frames(angles_deg)
    r, c = detector_offsets_mm(geometry)
    iso = isocentre_mm.to(torch.float64)
    det_centre = iso + (geometry.sdd_mm - geometry.sad_mm) * d  # (V, 3)
    pixels = (
        det_centre[:, None, None, :]
        + r[None, :, None, None] * v[:, None, None, :]
        + c[None, None, :, None] * u[:, None, None, :]
    )  # (V, H, W, 3)
    if geometry.beam == "cone":
        source = (iso - geometry.sad_mm * d)[:, None, None, :]
        return source.expand_as(pixels), pixels
    return pixels - geometry.sdd_mm * d[:, None, None, :], pixels


def project_points(
    points_mm: torch.Tensor,
    geometry: Geometry,
    angles_deg: torch.Tensor,
    isocentre_mm: torch.Tensor,
) -> torch.Tensor:
    """Detector coordinates (row, col) in fractional pixels of world points.

    points_mm: (N, 3) RAS+ mm. Returns (V, N, 2); the inverse of ``rays``: the
    point on the ray of pixel (r, c) projects to (r, c) exactly.
    """
    d, u, v = view_frames(angles_deg)  # (V, 3) each
    rel = points_mm.to(torch.float64)[None] - isocentre_mm.to(
        torch.float64
    )  # (1, N, 3)
    along_u = torch.einsum("vc,vnc->vn", u, rel.expand(d.shape[0], -1, -1))
    along_v = torch.einsum("vc,vnc->vn", v, rel.expand(d.shape[0], -1, -1))
    if geometry.beam == "cone":
        # Similar triangles: the distance from the source along d sets the scale.
        depth = geometry.sad_mm + torch.einsum(
            "vc,vnc->vn", d, rel.expand(d.shape[0], -1, -1)
        )
        scale = geometry.sdd_mm / depth
        along_u, along_v = along_u * scale, along_v * scale
    rows, cols = geometry.detector_px
    row = along_v / geometry.pixel_mm + (rows - 1) / 2
    col = along_u / geometry.pixel_mm + (cols - 1) / 2
    return torch.stack([row, col], dim=-1)
