import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry, resolve_angles
from ct_pipeline.training.data import ReconstructionDataset
from training_fixtures import GEOMETRY, make_patients


@pytest.fixture(scope="module")
def patients():
    return make_patients(6)


def test_target_is_the_clipped_hu_window_scaled_to_unit(patients):
    volumes, drr_sets = patients
    hu = np.full((16, 16, 16), -1000.0, dtype=np.float32)
    hu[0, 0, :5] = [-2048.0, -1000.0, 250.0, 1500.0, 3000.0]
    volumes = {**volumes, "patient_00": CTVolume(hu, volumes["patient_00"].affine)}
    data = ReconstructionDataset(volumes, drr_sets, ["patient_00"], [0.0, 90.0])
    _, target = data[0]
    assert target.shape == (1, 16, 16, 16) and target.dtype == torch.float32
    np.testing.assert_allclose(
        target[0, 0, 0, :5].numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7
    )
    narrow = ReconstructionDataset(
        volumes, drr_sets, ["patient_00"], [0.0], hu_window=(0.0, 500.0)
    )
    assert narrow[0][1][0, 0, 0, 2].item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("angles", "index"), [(resolve_angles(2, None), [0, 2]), ([135.0, 45.0], [3, 1])]
)
def test_views_are_the_selected_rendered_ones(patients, angles, index):
    volumes, drr_sets = patients
    data = ReconstructionDataset(
        volumes, drr_sets, ["patient_03", "patient_01"], angles
    )
    assert data.patient_ids == [
        "patient_01",
        "patient_03",
    ]  # sorted: same index -> patient everywhere
    views, _ = data[1]
    assert views.dtype == torch.float32
    np.testing.assert_array_equal(
        views.numpy(), drr_sets["patient_03"].projections[index]
    )
    assert data.angles_tensor().tolist() == angles


def test_resolve_angles():
    assert resolve_angles(4, None) == [0.0, 45.0, 90.0, 135.0]
    assert resolve_angles(8, None)[1] == 22.5
    assert resolve_angles(None, [10, 100]) == [10.0, 100.0]
    with pytest.raises(ValueError, match="num_views=3 disagrees with 2"):
        resolve_angles(3, [10, 100])
    with pytest.raises(ValueError, match="neither"):
        resolve_angles(None, None)


def test_unrendered_views_and_mixed_geometries_are_rejected(patients):
    volumes, drr_sets = patients
    with pytest.raises(ValueError, match="view 30.0 deg was not rendered"):
        ReconstructionDataset(volumes, drr_sets, ["patient_00"], [30.0])
    other = drr_sets["patient_01"]
    moved = DRRSet(
        other.projections,
        other.angles_deg,
        Geometry(detector_px=(16, 16), pixel_mm=30.0),
        other.isocentre_mm,
    )
    assert moved.geometry != GEOMETRY
    mixed = ReconstructionDataset(
        volumes,
        {**drr_sets, "patient_01": moved},
        ["patient_00", "patient_01"],
        [0.0],
    )
    with pytest.raises(ValueError, match="patient_01 geometry"):
        mixed.check_all()
    with pytest.raises(ValueError, match="patient_01 geometry"):
        mixed[1]  # a sample checks its own patient too
    with pytest.raises(ValueError, match="without a volume"):
        ReconstructionDataset(volumes, drr_sets, ["nobody"], [0.0])


def test_two_ranks_together_see_the_single_process_batches():
    """The property DDP equivalence rests on: rank r takes every 2nd index of one permutation."""
    ids = torch.arange(8)

    def batches(world: int, rank: int, batch: int, epoch: int) -> list[set[int]]:
        sampler = DistributedSampler(
            ids, num_replicas=world, rank=rank, shuffle=True, seed=5
        )
        sampler.set_epoch(epoch)
        return [
            set(b.tolist()) for b in DataLoader(ids, batch_size=batch, sampler=sampler)
        ]

    for epoch in (0, 1):
        single = batches(1, 0, 4, epoch)
        pairs = zip(batches(2, 0, 2, epoch), batches(2, 1, 2, epoch), strict=True)
        assert [a | b for a, b in pairs] == single
    assert batches(1, 0, 4, 0) != batches(1, 0, 4, 1)  # set_epoch reshuffles


class CountingLoader:
    """A picklable loader that counts its loads, like a Kedro partition's."""

    def __init__(self, value):
        self.value, self.loads = value, 0

    def __call__(self):
        self.loads += 1
        return self.value


def test_patients_are_read_when_a_sample_asks_for_them(patients):
    volumes, drr_sets = patients
    ids = sorted(volumes)
    lazy_volumes = {p: CountingLoader(volumes[p]) for p in ids}
    lazy_drrs = {p: CountingLoader(drr_sets[p]) for p in ids}
    data = ReconstructionDataset(lazy_volumes, lazy_drrs, ids, [0.0, 90.0])
    # Building it reads the first patient only (for the grid and geometry).
    assert [lazy_volumes[p].loads for p in ids] == [1] + [0] * (len(ids) - 1)
    views, target = data[3]
    assert [lazy_drrs[p].loads for p in ids] == [1, 0, 0, 1, 0, 0]
    eager = ReconstructionDataset(volumes, drr_sets, ids, [0.0, 90.0])
    torch.testing.assert_close(views, eager[3][0])
    torch.testing.assert_close(target, eager[3][1])
    data.check_all()
    assert all(lazy_volumes[p].loads >= 1 for p in ids)


def test_views_of_the_cube_and_of_finer_anatomy_do_not_mix(patients):
    volumes, drr_sets = patients
    finer = {
        p: dataclasses.replace(d, anatomy_spacing_mm=6.0) for p, d in drr_sets.items()
    }
    mixed = {**finer, "patient_01": drr_sets["patient_01"]}
    ids = ["patient_00", "patient_01"]
    assert ReconstructionDataset(volumes, finer, ids, [0.0]).anatomy_spacing_mm == 6.0
    data = ReconstructionDataset(volumes, mixed, ids, [0.0])
    with pytest.raises(
        ValueError, match="rendered from None mm anatomy.*pipelines drr"
    ):
        data.check_all()
