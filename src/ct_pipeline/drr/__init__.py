"""DRR rendering: geometry, HU -> mu physics and the ray-integral projector."""

from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import (
    Geometry,
    default_angles,
    project_points,
    rays,
    view_frames,
)
from ct_pipeline.drr.physics import add_poisson_noise, detector_blur, hu_to_mu
from ct_pipeline.drr.projector import project, render_drrs

__all__ = [
    "DRRSet",
    "Geometry",
    "add_poisson_noise",
    "default_angles",
    "detector_blur",
    "hu_to_mu",
    "project",
    "project_points",
    "rays",
    "render_drrs",
    "view_frames",
]
