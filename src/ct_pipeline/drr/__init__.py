"""DRR rendering: geometry, HU -> mu physics and the ray-integral projector."""

from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry, default_angles, project_points, rays, view_frames

__all__ = ["DRRSet", "Geometry", "default_angles", "project_points", "rays", "view_frames"]
