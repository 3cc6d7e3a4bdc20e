"""The projector against closed-form path lengths, and the orientation convention."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr import Geometry, project, project_points, rays, render_drrs

MU = 0.02  # 1/mm, water
SPACING = (0.4, 0.5, 0.625)  # anisotropic on purpose: i, j, k differ
SHAPE = (100, 80, 64)  # a 40 mm cube
ORIGIN = np.array([-20.0, 7.0, 3.0])  # the volume need not be centred on 0
SUPERSAMPLE = 6  # partial-volume fractions in steps of 1 / 6**3
ANGLES = [0.0, 90.0, 37.0]
GEOMETRIES = {
    "cone": Geometry(detector_px=(24, 24), pixel_mm=2.4),
    "parallel": Geometry(detector_px=(24, 24), pixel_mm=1.6, beam="parallel"),
}


def _affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = ORIGIN
    return affine


def _centre() -> np.ndarray:
    return CTVolume(np.zeros(SHAPE, np.float32), _affine()).centre_mm


def _voxelise(
    inside: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Mean occupancy of each voxel cell, from SUPERSAMPLE**3 points per cell."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    axes = [np.arange(n, dtype=np.float64) for n in SHAPE]
    fraction = np.zeros(SHAPE)
    for di in offsets:
        x = ((axes[0] + di) * SPACING[0] + ORIGIN[0])[:, None, None]
        for dj in offsets:
            y = ((axes[1] + dj) * SPACING[1] + ORIGIN[1])[None, :, None]
            for dk in offsets:
                z = ((axes[2] + dk) * SPACING[2] + ORIGIN[2])[None, None, :]
                fraction += inside(x, y, z)
    return fraction / SUPERSAMPLE**3


def _ellipsoid_chords(origin, end, centre, radii) -> np.ndarray:
    """Length in mm of each segment origin -> end inside an axis-aligned ellipsoid."""
    o = (origin - centre) / radii
    d = (end - origin) / radii
    a, b, c = (d * d).sum(-1), 2 * (o * d).sum(-1), (o * o).sum(-1) - 1
    disc = np.clip(b * b - 4 * a * c, 0, None)
    t1 = np.clip((-b - np.sqrt(disc)) / (2 * a), 0, 1)
    t2 = np.clip((-b + np.sqrt(disc)) / (2 * a), 0, 1)
    return (t2 - t1) * np.linalg.norm(end - origin, axis=-1)


def _box_chords(origin, end, low, high) -> np.ndarray:
    """Slab method: length in mm of each segment inside the box [low, high]."""
    d = end - origin
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (low - origin) / d, (high - origin) / d
    t_in = np.clip(np.nanmax(np.minimum(ta, tb), axis=-1), 0, 1)
    t_out = np.clip(np.nanmin(np.maximum(ta, tb), axis=-1), 0, 1)
    return np.clip(t_out - t_in, 0, None) * np.linalg.norm(d, axis=-1)


def _rays(geometry: Geometry, angle: float) -> tuple[np.ndarray, np.ndarray]:
    origin, end = rays(geometry, torch.tensor([angle]), torch.from_numpy(_centre()))
    return origin[0].numpy(), end[0].numpy()


def _render(occupancy: np.ndarray, geometry: Geometry, angle: float) -> np.ndarray:
    mu = torch.from_numpy(occupancy * MU).float()
    return project(mu, _affine(), geometry, [angle], _centre())[0].numpy()


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray, float]:
    centre, radius = _centre() + np.array([2.5, -1.5, 1.0]), 14.0
    occupancy = _voxelise(
        lambda x, y, z: (
            ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
            <= radius**2
        )
    )
    return occupancy, centre, radius


@pytest.fixture(scope="module")
def ellipsoid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre, radii = (
        _centre() + np.array([-1.0, 2.0, -1.5]),
        np.array([16.0, 12.0, 14.0]),
    )
    occupancy = _voxelise(
        lambda x, y, z: (
            (
                ((x - centre[0]) / radii[0]) ** 2
                + ((y - centre[1]) / radii[1]) ** 2
                + ((z - centre[2]) / radii[2]) ** 2
            )
            <= 1
        )
    )
    return occupancy, centre, radii


@pytest.mark.parametrize("beam", sorted(GEOMETRIES))
@pytest.mark.parametrize("angle", ANGLES)
def test_sphere_matches_chord_lengths(sphere, beam, angle):
    occupancy, centre, radius = sphere
    geometry = GEOMETRIES[beam]
    origin, end = _rays(geometry, angle)
    expected = MU * _ellipsoid_chords(origin, end, centre, np.full(3, radius))
    got = _render(occupancy, geometry, angle)
    # Pixels whose ray passes within half a radius: the centre and off-centre.
    deep = expected > MU * 2 * radius * np.sqrt(1 - 0.5**2)
    assert deep.sum() >= 20
    err = np.abs(got - expected)[deep] / expected[deep]
    assert err.max() < 0.005
    # Rays that pass 2 mm clear of the sphere see nothing.
    clear = _ellipsoid_chords(origin, end, centre, np.full(3, radius + 2.0)) == 0
    assert clear.sum() >= 20 and np.abs(got[clear]).max() < 1e-6


@pytest.mark.parametrize("beam", sorted(GEOMETRIES))
@pytest.mark.parametrize("angle", ANGLES)
def test_ellipsoid_matches_chord_lengths(ellipsoid, beam, angle):
    occupancy, centre, radii = ellipsoid
    geometry = GEOMETRIES[beam]
    origin, end = _rays(geometry, angle)
    expected = MU * _ellipsoid_chords(origin, end, centre, radii)
    got = _render(occupancy, geometry, angle)
    deep = expected > 0.75 * expected.max()
    assert deep.sum() >= 20
    err = np.abs(got - expected)[deep] / expected[deep]
    assert err.max() < 0.005


@pytest.mark.parametrize("beam", sorted(GEOMETRIES))
@pytest.mark.parametrize("angle", ANGLES)
def test_voxel_aligned_box_matches_slab_lengths(beam, angle):
    # Faces on voxel boundaries: the box is exactly representable.
    first, last = np.array([30, 20, 14]), np.array([75, 62, 50])
    occupancy = np.zeros(SHAPE)
    occupancy[first[0] : last[0], first[1] : last[1], first[2] : last[2]] = 1.0
    spacing = np.array(SPACING)
    low, high = ORIGIN + (first - 0.5) * spacing, ORIGIN + (last - 0.5) * spacing
    geometry = GEOMETRIES[beam]
    origin, end = _rays(geometry, angle)
    expected = MU * _box_chords(origin, end, low, high)
    got = _render(occupancy, geometry, angle)
    deep = expected > 0.75 * expected.max()
    assert deep.sum() >= 20
    assert (np.abs(got - expected)[deep] / expected[deep]).max() < 0.005


def test_ray_segment_starts_at_a_source_inside_the_volume():
    # The source sits 6 mm behind the isocentre, inside a uniform volume: each
    # ray integrates from the source only, not through the whole volume.
    geometry = Geometry(sad_mm=6.0, sdd_mm=400.0, detector_px=(8, 8), pixel_mm=20.0)
    origin, end = _rays(geometry, 0.0)
    spacing = np.array(SPACING)
    low = ORIGIN - 0.5 * spacing
    high = ORIGIN + (np.array(SHAPE) - 0.5) * spacing
    expected = MU * _box_chords(origin, end, low, high)
    got = _render(np.ones(SHAPE), geometry, 0.0)
    centre_ray = expected[3:5, 3:5]
    assert np.allclose(centre_ray, MU * (20.0 + 6.0), rtol=1e-3)  # 40 mm cube
    # Whole slices are counted from the source: up to half a slice of error.
    assert np.allclose(got, expected, rtol=0.03)


def _marker_ct(offset_mm: np.ndarray) -> CTVolume:
    """Air with a 3-voxel dense cube at ``offset_mm`` (RAS+) from the centre."""
    hu = np.full(SHAPE, -1000.0, np.float32)
    spacing = np.array(SPACING)
    at = np.round((_centre() + offset_mm - ORIGIN) / spacing).astype(int)
    hu[at[0] - 1 : at[0] + 2, at[1] - 1 : at[1] + 2, at[2] - 1 : at[2] + 2] = 3000.0
    return CTVolume(hu, _affine())


def _brightest(image: np.ndarray) -> np.ndarray:
    return np.array(np.unravel_index(np.argmax(image), image.shape))


@pytest.mark.parametrize(
    ("offset_mm", "angle", "side"),
    [
        # PA: the patient's right is on the image's left, the head at the top.
        (np.array([12.0, 0.0, 12.0]), 0.0, "left"),
        # PA: the patient's left is on the image's right.
        (np.array([-12.0, 0.0, 12.0]), 0.0, "right"),
        # Left lateral: u runs toward posterior, so anterior is on the left.
        (np.array([0.0, 12.0, 12.0]), 90.0, "left"),
        (np.array([0.0, -12.0, 12.0]), 90.0, "right"),
    ],
)
def test_marker_lands_where_the_convention_says(offset_mm, angle, side):
    geometry = Geometry(detector_px=(32, 32), pixel_mm=2.0)
    image = render_drrs(_marker_ct(offset_mm), geometry, [angle])[0]
    row, col = _brightest(image)
    assert row < 16, "superior marker must be in the top half"
    assert (col < 16) if side == "left" else (col >= 16)
    # ... and exactly where project_points puts the marker's centre.
    expected = project_points(
        torch.from_numpy(_centre() + offset_mm)[None],
        geometry,
        torch.tensor([angle]),
        torch.from_numpy(_centre()),
    )[0, 0].numpy()
    assert np.abs(np.array([row, col]) - expected).max() <= 1.0


def test_lateral_view_of_a_right_marker_is_centred_left_right():
    geometry = Geometry(detector_px=(32, 32), pixel_mm=2.0)
    image = render_drrs(_marker_ct(np.array([12.0, 0.0, 12.0])), geometry, [90.0])[0]
    assert abs(_brightest(image)[1] - 15.5) <= 1.0


def test_project_is_linear_and_its_gradient_is_the_adjoint():
    # p = A mu is linear, so autograd of <w, A mu> must give A^T w with
    # <A^T w, mu> = <w, A mu>; this checks the backward pass end to end.
    generator = torch.Generator().manual_seed(0)
    shape = (20, 16, 12)
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    centre = CTVolume(np.zeros(shape, np.float32), affine).centre_mm
    geometry = Geometry(detector_px=(10, 12), pixel_mm=4.0)
    mu = torch.rand(shape, generator=generator, requires_grad=True)
    weights = torch.rand((3, 10, 12), generator=generator)
    image = project(mu, affine, geometry, [0.0, 37.0, 90.0], centre)
    (weights * image).sum().backward()
    adjoint = mu.grad
    assert adjoint is not None and torch.isfinite(adjoint).all()
    assert (adjoint > 0).float().mean() > 0.5
    lhs = float((adjoint * mu.detach()).sum())
    rhs = float((weights * image.detach()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_render_drrs_is_noise_free_by_default_and_seeded_when_asked():
    ct = _marker_ct(np.array([0.0, 0.0, 0.0]))
    geometry = Geometry(detector_px=(16, 16), pixel_mm=3.0)
    clean = render_drrs(ct, geometry, [0.0])
    expected = project(
        torch.from_numpy(np.maximum(MU * (1 + ct.hu / 1000.0), 0)),
        ct.affine,
        geometry,
        [0.0],
        ct.centre_mm,
    ).numpy()
    np.testing.assert_allclose(clean, expected, rtol=1e-6, atol=1e-7)
    noisy = [
        render_drrs(ct, geometry, [0.0], photons_per_pixel=1e4, seed=seed)
        for seed in (1, 1, 2)
    ]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.array_equal(noisy[0], noisy[2])
    assert not np.array_equal(noisy[0], clean)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-1.0, -1.0, 1.0, 1.0]),  # LPS: must be reoriented first
        np.array([[1.0, 0.2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    ],
)
def test_non_canonical_affine_is_refused(affine):
    with pytest.raises(ValueError, match="RAS\\+ canonical"):
        project(
            torch.zeros(4, 4, 4),
            affine,
            Geometry(detector_px=(4, 4)),
            [0.0],
            np.zeros(3),
        )


def test_volume_must_be_3d():
    with pytest.raises(ValueError, match="mu must be"):
        project(
            torch.zeros(4, 4),
            np.eye(4),
            Geometry(detector_px=(4, 4)),
            [0.0],
            np.zeros(3),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(sphere):
    occupancy, _, _ = sphere
    mu = torch.from_numpy(occupancy * MU).float()
    geometry = GEOMETRIES["cone"]
    cpu = project(mu, _affine(), geometry, ANGLES, _centre())
    gpu = project(mu.cuda(), _affine(), geometry, ANGLES, _centre())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_chunking_over_views_and_rays_does_not_change_the_images(sphere, monkeypatch):
    from ct_pipeline.drr import projector

    occupancy, _, _ = sphere
    geometry = GEOMETRIES["cone"]
    whole = _render(occupancy, geometry, 37.0)
    monkeypatch.setattr(projector, "_RAYS_PER_GROUP", 100)  # one view per group
    monkeypatch.setattr(projector, "_SAMPLES_PER_CHUNK", 100 * max(SHAPE))  # 100 rays
    mu = torch.from_numpy(occupancy * MU).float()
    chunked = project(mu, _affine(), geometry, [37.0, 90.0], _centre())
    torch.testing.assert_close(chunked[0].numpy(), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        chunked[1].numpy(), _render(occupancy, geometry, 90.0), rtol=0, atol=0
    )
