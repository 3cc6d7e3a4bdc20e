"""Procedural chest phantoms: determinism, HU of each tissue, anatomy on the right side."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ct_pipeline.phantoms import (
    TISSUE_HU,
    Tissue,
    chest_phantom,
    chest_phantom_with_labels,
    generate_phantoms,
)

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def phantoms():
    return {seed: chest_phantom_with_labels(seed) for seed in SEEDS}


def centroid_mm(ct, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return ct.affine[:3, :3] @ index + ct.affine[:3, 3]


def test_same_seed_same_patient_other_seed_other_patient(phantoms):
    again = chest_phantom(0)
    np.testing.assert_array_equal(again.hu, phantoms[0][0].hu)
    np.testing.assert_array_equal(again.affine, phantoms[0][0].affine)
    for a, b in [(0, 1), (1, 2)]:
        changed = phantoms[a][1] != phantoms[b][1]
        assert changed.mean() > 0.05  # anatomy differs, not only the noise


def test_grid_is_the_demo_field(phantoms):
    ct = phantoms[0][0]
    assert ct.hu.shape == (96, 96, 96) and ct.hu.dtype == np.float32
    np.testing.assert_allclose(ct.spacing_mm, (4.0, 4.0, 4.0))
    np.testing.assert_allclose(ct.centre_mm, 0.0, atol=1e-9)
    assert np.all(np.diag(ct.affine)[:3] > 0)  # RAS+


@pytest.mark.parametrize("seed", SEEDS)
def test_body_size_and_full_superior_inferior_extent(phantoms, seed):
    ct, labels = phantoms[seed]
    body = ct.hu > -500
    body |= labels != Tissue.AIR
    spacing = ct.spacing_mm[0]
    widths = [
        np.ptp(np.flatnonzero(body.any(axis=other))) * spacing
        for other in [(1, 2), (0, 2)]
    ]
    assert 300.0 <= widths[0] <= 360.0  # left-right
    assert 200.0 <= widths[1] <= 270.0  # anterior-posterior
    assert (
        body[:, :, 0].any() and body[:, :, -1].any()
    )  # body crosses the whole field in S


@pytest.mark.parametrize("seed", SEEDS)
def test_each_tissue_has_ct_numbers_in_its_range(phantoms, seed):
    ct, labels = phantoms[seed]
    in_plane = ndimage.generate_binary_structure(2, 1)[
        :, :, None
    ]  # fill each axial slice
    inside_body = ndimage.binary_fill_holes(ct.hu > -500, structure=in_plane)
    air = labels == Tissue.AIR
    assert np.all(ct.hu[air & ~inside_body] == -1000.0)
    gas = ct.hu[air & inside_body]  # trachea, bronchi, stomach: air plus noise
    assert gas.size > 0 and abs(np.median(gas) + 1000.0) < 15.0
    assert ct.hu.min() >= -1024.0
    for tissue in [t for t in Tissue if t not in (Tissue.AIR, Tissue.LUNG)]:
        values = ct.hu[labels == tissue]
        if tissue is Tissue.NODULE and values.size == 0:
            continue
        low, high = TISSUE_HU[tissue]
        median = float(np.median(values))
        assert low - 15.0 <= median <= high + 15.0, (tissue.name, median)
    lung = ct.hu[labels == Tissue.LUNG]
    assert -900.0 <= np.median(lung) <= -780.0
    assert lung.std() > 15.0  # textured, with vessels, not a flat fill
    assert np.mean(lung > -600.0) > 0.002  # some voxels hold vessels


@pytest.mark.parametrize("seed", SEEDS)
def test_anatomy_sits_on_the_right_side(phantoms, seed):
    ct, labels = phantoms[seed]
    body = centroid_mm(ct, labels != Tissue.AIR)
    heart = centroid_mm(ct, np.isin(labels, [Tissue.HEART]))
    liver = centroid_mm(ct, labels == Tissue.LIVER)
    spine = centroid_mm(ct, np.isin(labels, [Tissue.TRABECULAR]))
    lungs = np.argwhere(labels == Tissue.LUNG)
    # RAS+: x grows toward the patient's right, y toward anterior.
    assert heart[0] < body[0] - 10.0  # heart on the patient's left
    assert liver[0] > body[0] + 20.0  # liver on the right
    assert spine[1] < heart[1] - 40.0 and spine[1] < body[1]  # spine posterior
    assert abs(spine[0] - body[0]) < 15.0  # spine in the midline
    assert (
        heart[2] < centroid_mm(ct, labels == Tissue.LUNG)[2]
    )  # heart low in the chest
    centre_i = (ct.hu.shape[0] - 1) / 2
    assert (lungs[:, 0] < centre_i).sum() > 0 and (lungs[:, 0] > centre_i).sum() > 0


def test_other_grids_and_the_id_scheme():
    small = generate_phantoms(2, seed=5, size_vox=32, spacing_mm=12.0)
    assert list(small) == ["phantom_000", "phantom_001"]
    np.testing.assert_array_equal(
        small["phantom_001"].hu, chest_phantom(6, 32, 12.0).hu
    )
    assert small["phantom_000"].hu.shape == (32, 32, 32)
    assert (small["phantom_000"].hu < -700).sum() > 1000  # lungs and air survive


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="size_vox"):
        chest_phantom(0, size_vox=1)
    with pytest.raises(ValueError, match="n must be"):
        generate_phantoms(0, seed=0)
