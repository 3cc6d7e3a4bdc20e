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
from ct_pipeline.phantoms import body as body_module
from ct_pipeline.phantoms import chest as chest_module

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


def extent_mm(mask: np.ndarray, axis: int, spacing: float) -> float:
    others = tuple(a for a in range(3) if a != axis)
    occupied = np.flatnonzero(mask.any(axis=others))
    return float(np.ptp(occupied) + 1) * spacing if occupied.size else 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_scan_starts_and_ends_inside_the_field(phantoms, seed):
    ct, labels = phantoms[seed]
    body = labels != Tissue.AIR
    # Air above the neck and below the upper abdomen, as in a real chest CT.
    assert not body[:, :, 0].any() and not body[:, :, -1].any()
    assert 180.0 <= extent_mm(body, 2, ct.spacing_mm[0]) < 384.0


def test_patients_differ_in_build_and_scan_range():
    builds = [chest_phantom_with_labels(seed, 48, 8.0)[1] for seed in range(10)]
    trunk = [labels == Tissue.LUNG for labels in builds]
    widths = [extent_mm(lung, 0, 8.0) for lung in trunk]
    lengths = [extent_mm(labels != Tissue.AIR, 2, 8.0) for labels in builds]
    assert max(widths) - min(widths) >= 60.0  # small to large adult
    assert max(lengths) - min(lengths) >= 40.0  # scan ranges differ


@pytest.fixture
def drawn(monkeypatch):
    """The same patient drawn with one of the habitus's choices forced."""

    def draw(**probabilities):
        for name, value in probabilities.items():
            monkeypatch.setattr(body_module, name, value)
        return chest_phantom_with_labels(3, 48, 8.0)

    return draw


def test_arms_down_widen_the_chest_and_raised_arms_rise_beside_the_head(drawn):
    down = drawn(ARM_POSE_PROBABILITY=(0.0, 1.0, 0.0))[1]
    raised = drawn(ARM_POSE_PROBABILITY=(1.0, 0.0, 0.0))[1]
    absent = drawn(ARM_POSE_PROBABILITY=(0.0, 0.0, 1.0))[1]
    mid = 20  # a slice through the mid chest
    width = {
        name: extent_mm(labels[:, :, mid : mid + 1] != Tissue.AIR, 0, 8.0)
        for name, labels in (("down", down), ("raised", raised), ("absent", absent))
    }
    assert width["down"] >= width["absent"] + 60.0
    assert width["raised"] == width["absent"]
    top = slice(34, 48)  # shoulders and above
    assert (raised[:, :, top] != Tissue.AIR).sum() > (
        absent[:, :, top] != Tissue.AIR
    ).sum()


def test_the_table_lies_under_the_back(drawn):
    with_table = drawn(TABLE_PROBABILITY=1.0)[1]
    without = drawn(TABLE_PROBABILITY=0.0)[1]
    table = np.argwhere(with_table == Tissue.TABLE)
    assert table.size > 0 and not (without == Tissue.TABLE).any()
    patient = np.argwhere((with_table != Tissue.AIR) & (with_table != Tissue.TABLE))
    assert table[:, 1].mean() < patient[:, 1].min() + 2  # posterior of the patient


def test_breasts_add_tissue_in_front_and_contrast_brightens_the_blood(drawn):
    plain, plain_labels = drawn(BREAST_PROBABILITY=0.0, CONTRAST_PROBABILITY=0.0)
    more, more_labels = drawn(BREAST_PROBABILITY=1.0, CONTRAST_PROBABILITY=1.0)
    added = (more_labels != Tissue.AIR) & (plain_labels == Tissue.AIR)
    body = np.argwhere(plain_labels != Tissue.AIR)
    assert added.sum() > 50 and np.argwhere(added)[:, 1].mean() > body[:, 1].mean()
    assert np.median(plain.hu[plain_labels == Tissue.BLOOD]) < 80.0
    assert np.median(more.hu[more_labels == Tissue.BLOOD]) > 140.0


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
        if tissue in (Tissue.NODULE, Tissue.TABLE) and values.size == 0:
            continue  # drawn for some patients only
        low, high = TISSUE_HU[tissue]
        if tissue is Tissue.BLOOD:
            high = 350.0  # with contrast
        if tissue is Tissue.CORTICAL:
            # 4 mm shell voxels hold 1.5 mm of cortex over marrow.
            low = TISSUE_HU[Tissue.TRABECULAR][0] + 0.375 * (low - 320.0)
            high = TISSUE_HU[Tissue.TRABECULAR][1] + 0.375 * (high - 180.0)
        median = float(np.median(values))
        assert low - 15.0 <= median <= high + 15.0, (tissue.name, median)
    lung = ct.hu[labels == Tissue.LUNG]
    assert -900.0 <= np.median(lung) <= -780.0
    assert lung.std() > 15.0  # textured, with vessels, not a flat fill
    assert np.mean(lung > -600.0) > 0.002  # some voxels hold vessels


@pytest.mark.parametrize("seed", SEEDS)
def test_anatomy_sits_on_the_right_side(phantoms, seed):
    ct, labels = phantoms[seed]
    body = centroid_mm(ct, (labels != Tissue.AIR) & (labels != Tissue.TABLE))
    heart = centroid_mm(ct, np.isin(labels, [Tissue.HEART]))
    liver = centroid_mm(ct, labels == Tissue.LIVER)
    # Bone marrow near the midline: the spine (not the arms or shoulder blades).
    x_mm = ct.affine[0, 0] * np.arange(labels.shape[0]) + ct.affine[0, 3]
    midline = (np.abs(x_mm - body[0]) < 40.0)[:, None, None]
    spine = centroid_mm(ct, (labels == Tissue.TRABECULAR) & midline)
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


@pytest.mark.parametrize(
    ("spacing_mm", "fill"), [(4.0, 0.375), (1.0, 0.75), (0.5, 1.0), (0.3, 1.0)]
)
def test_a_cortical_voxel_holds_the_cortex_that_fits_in_it(spacing_mm, fill):
    # 1.5 mm of cortex spread over the shell's whole voxels: bone mass does not
    # grow with the voxel size.
    assert chest_module._cortex_fill(spacing_mm) == pytest.approx(fill)
