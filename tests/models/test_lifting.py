"""The lifting puts what a detector pixel sees on that pixel's ray, and nowhere else."""

from __future__ import annotations

import pytest
import torch

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry, rays
from ct_pipeline.models.lifting import GeometricLifting, sample_views, sampling_grid

ISO = torch.zeros(3, dtype=torch.float64)


def _spike(h: int, w: int, row: int, col: int) -> torch.Tensor:
    features = torch.zeros(1, 1, 1, h, w)
    features[..., row, col] = 1.0
    return features


def _points_on_ray(
    source: torch.Tensor, end: torch.Tensor, half_length_mm: float
) -> torch.Tensor:
    """Points of the ray (source -> end) within half_length_mm of its isocentre crossing."""
    direction = (end - source) / (end - source).norm()
    closest = source + ((ISO - source) @ direction) * direction
    return (
        closest
        + torch.linspace(-half_length_mm, half_length_mm, 25)[:, None] * direction
    )


@pytest.mark.parametrize("beam", ["cone", "parallel"])
@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_points_on_a_pixel_ray_see_that_pixel(beam: str, angle: float) -> None:
    geometry = Geometry(detector_px=(16, 20), pixel_mm=10.0, beam=beam)
    angles = torch.tensor([angle])
    source, end = rays(geometry, angles, ISO)
    row, col = 5, 13
    points = _points_on_ray(source[0, row, col], end[0, row, col], 150.0)
    values = sample_views(
        _spike(16, 20, row, col), sampling_grid(geometry, angles, points)
    )
    assert torch.allclose(values, torch.ones(()), atol=1e-4)
    # Coarser scales: feature pixel (j, i) at 1/2 covers detector pixels 2j, 2j+1;
    # its centre's ray is the ray of a half-resolution detector with double pitch.
    half = Geometry(detector_px=(8, 10), pixel_mm=20.0, beam=beam)
    source, end = rays(half, angles, ISO)
    points = _points_on_ray(source[0, 2, 6], end[0, 2, 6], 150.0)
    values = sample_views(_spike(8, 10, 2, 6), sampling_grid(geometry, angles, points))
    assert torch.allclose(values, torch.ones(()), atol=1e-4)


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_voxel_grid_lifting_lights_only_the_ray(beam: str) -> None:
    geometry = Geometry(detector_px=(16, 16), pixel_mm=12.0, beam=beam)
    size, spacing = 16, 8.0
    angles = torch.tensor([30.0])
    lift = GeometricLifting(
        geometry, CubeGrid(size, spacing), in_channels=1, out_channels=1
    )
    row, col = 6, 9
    lifted = sample_views(
        _spike(16, 16, row, col), lift.sampling(angles, torch.device("cpu"))
    )
    lifted = lifted.view(size, size, size).double()

    # Voxel centres built here, independently: array axes i -> R, j -> A, k -> S.
    axis = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * spacing
    centres = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    source, end = rays(geometry, angles, ISO)
    s, e = source[0, row, col], end[0, row, col]
    direction = (e - s) / (e - s).norm()
    rel = centres - s
    along = rel @ direction
    off_ray_mm = (rel - along[..., None] * direction).norm(dim=-1)
    # Distance from the ray measured in detector pixels at that voxel's depth.
    scale = (e - s).norm() / along if beam == "cone" else torch.ones_like(along)
    off_ray_px = off_ray_mm * scale / geometry.pixel_mm

    assert (lifted[off_ray_px < 0.25] > 0.5).all() and (off_ray_px < 0.25).sum() >= 4
    # Bilinear support: anything lit lies within sqrt(2) pixels of the ray.
    assert (lifted[off_ray_px > 1.5] == 0).all()
    assert lifted.sum() > 0


def test_sampling_grid_is_cached_per_angle_set() -> None:
    lift = GeometricLifting(Geometry(), CubeGrid(8, 12.0), 1, 1)
    a = lift.sampling(torch.tensor([0.0, 90.0]), torch.device("cpu"))
    assert lift.sampling(torch.tensor([0.0, 90.0]), torch.device("cpu")) is a
    assert lift.sampling(torch.tensor([0.0, 45.0]), torch.device("cpu")) is not a


def test_lifting_back_projects_rendered_drrs_onto_the_object() -> None:
    """Renderer and lifting agree: DRRs of a small off-centre cube, lifted back,
    light up that cube first (RAS+ axes and view angles consistent end to end)."""
    import numpy as np

    from ct_pipeline.ct.volume import CTVolume
    from ct_pipeline.drr.projector import render_drrs

    size, spacing = 16, 12.0
    hu = np.full((size,) * 3, -1000.0, dtype=np.float32)
    hu[10:12, 4:6, 12:14] = 1000.0  # right, posterior, superior of centre
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(size - 1) / 2 * spacing
    geometry = Geometry(detector_px=(32, 32), pixel_mm=9.0)
    angles = [0.0, 60.0, 120.0]
    drrs = render_drrs(CTVolume(hu=hu, affine=affine), geometry, angles)
    lift = GeometricLifting(
        geometry, CubeGrid(size, spacing), in_channels=1, out_channels=1
    )
    features = torch.from_numpy(drrs)[None, :, None]  # (1, V, 1, H, W)
    samples = sample_views(
        features, lift.sampling(torch.tensor(angles), torch.device("cpu"))
    )
    seen_by_all = samples.amin(dim=1).view(size, size, size)
    peak = np.unravel_index(int(seen_by_all.argmax()), (size,) * 3)
    assert 10 <= peak[0] < 12 and 4 <= peak[1] < 6 and 12 <= peak[2] < 14
