"""preprocess_ct: exact isotropic RAS+ cube, world positions kept, body centred."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ct_pipeline.ct import CTVolume, CubeGrid, preprocess_ct
from ct_pipeline.ct.preprocess import resample_to_grid


def world_grid(shape, affine) -> np.ndarray:
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:4]).T.reshape(*shape, 3)


def phantom_with_landmark(
    affine: np.ndarray, shape, landmark_mm: np.ndarray
) -> CTVolume:
    """Air, a soft-tissue box (the body) and a smooth bright blob at ``landmark_mm``."""
    world = world_grid(shape, affine)
    hu = np.full(shape, -1000.0)
    body = np.all(np.abs(world - [20.0, -10.0, 5.0]) < [40.0, 30.0, 30.0], axis=-1)
    hu[body] = 0.0
    distance2 = np.sum((world - landmark_mm) ** 2, axis=-1)
    hu += 1000.0 * np.exp(-distance2 / (2 * 6.0**2))
    return CTVolume(hu=hu.astype(np.float32), affine=affine)


def blob_centroid_mm(ct: CTVolume) -> np.ndarray:
    weight = np.clip(ct.hu - 300.0, 0.0, None)
    world = world_grid(ct.hu.shape, ct.affine)
    return (world * weight[..., None]).sum(axis=(0, 1, 2)) / weight.sum()


ANISOTROPIC = np.array(
    [[1.5, 0, 0, -75.0], [0, 2.0, 0, -90.0], [0, 0, 3.0, -60.0], [0, 0, 0, 1.0]]
)
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = Rotation.from_euler(
    "zx", [20, 10], degrees=True
).as_matrix() @ np.diag([1.5, 2.0, 3.0])
# Volume centre at (10, -5, 0): the rotated field still holds the whole body box.
OBLIQUE[:3, 3] = [10.0, -5.0, 0.0] - OBLIQUE[:3, :3] @ (np.array([100, 80, 50]) - 1) / 2


@pytest.mark.parametrize(
    "affine", [ANISOTROPIC, OBLIQUE], ids=["anisotropic", "oblique"]
)
def test_landmark_keeps_its_world_position(affine: np.ndarray):
    landmark = np.array([35.0, 5.0, 15.0])
    ct = phantom_with_landmark(affine, (100, 80, 50), landmark)
    before = blob_centroid_mm(ct)

    out = preprocess_ct(ct, target_spacing_mm=4.0, volume_size=40)

    assert out.hu.shape == (40, 40, 40) and out.hu.dtype == np.float32
    np.testing.assert_array_equal(out.affine[:3, :3], np.diag([4.0, 4.0, 4.0]))
    assert np.linalg.norm(blob_centroid_mm(out) - before) < 2.0  # half a voxel
    # Centred on the body box (centre (20, -10, 5)) to within one output voxel.
    assert np.all(np.abs(out.centre_mm - [20.0, -10.0, 5.0]) <= 4.0)


def test_cube_larger_than_the_scan_is_padded_with_air():
    ct = phantom_with_landmark(ANISOTROPIC, (100, 80, 50), np.zeros(3))
    out = preprocess_ct(ct, target_spacing_mm=6.0, volume_size=48)  # 288 mm field
    assert out.hu.shape == (48, 48, 48)
    assert out.hu[0, 0, 0] == -1024.0 and out.hu[-1, -1, -1] == -1024.0
    assert out.hu.max() > 300.0


def test_downsampling_is_antialiased():
    """Voxel-scale noise must average out, not alias into the coarse grid."""
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    hu = (rng.normal(0.0, 100.0, (96, 96, 96))).astype(np.float32)
    out = preprocess_ct(CTVolume(hu=hu, affine=affine), 8.0, 8, body_threshold_hu=-1e9)
    # An 8^3 block mean of sigma-100 noise has sigma ~4.4; plain trilinear keeps ~100.
    assert out.hu.std() < 25.0


def test_a_voxel_across_the_end_of_the_scan_holds_its_share_of_air():
    """A scan of water that ends 2 mm beyond a 12 mm voxel's centre: the voxel
    is two-thirds water, one-third air (-341 HU as a box average), as the
    views of that scan see it; the edge tissue repeated would make it water."""
    hu = np.zeros((40, 40, 30), dtype=np.float32)  # 1 mm voxels, z in -0.5..29.5
    ct = CTVolume(hu=hu, affine=np.eye(4))
    out = resample_to_grid(ct, CubeGrid(2, 12.0, (19.5, 19.5, 21.5)))
    inside, across = out.hu[:, :, 0], out.hu[:, :, 1]  # z centres 15.5 and 27.5
    assert np.all(inside > -30.0)
    assert np.all((across > -450.0) & (across < -250.0))


def test_bad_arguments_are_rejected():
    ct = phantom_with_landmark(ANISOTROPIC, (10, 10, 10), np.zeros(3))
    with pytest.raises(ValueError, match="target_spacing_mm"):
        preprocess_ct(ct, 0.0, 8)
    with pytest.raises(ValueError, match="volume_size"):
        preprocess_ct(ct, 2.0, 0)
