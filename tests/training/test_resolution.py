"""The resolution schedule's parameter and the binning of a coarse stage's samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry, detector_offsets_mm
from ct_pipeline.metrics import to_unit
from ct_pipeline.training import ReconstructionDataset, TrainConfig
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.resolution import (
    bin_at,
    bin_views,
    bin_volume,
    schedule_stages,
)
from training_fixtures import make_patients

SCHEDULE = [{"bin": 2, "epochs": 3}, {"bin": 1, "epochs": 1}]


def config(**changes: object) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "resolution_schedule": SCHEDULE, **changes})


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"bin": 2, "epochs": 4}, "must be a list of stages"),
        ([], "must list at least one stage"),
        ([{"bin": 2}, {"bin": 1, "epochs": 4}], "stage 1 must have exactly the keys"),
        ([{"bin": 2, "epochs": 3, "size": 16}, {"bin": 1, "epochs": 1}], "stage 1"),
        ([{"bin": 0, "epochs": 3}, {"bin": 1, "epochs": 1}], "bin must be an integer"),
        ([{"bin": 2.0, "epochs": 3}, {"bin": 1, "epochs": 1}], "bin must be an int"),
        ([{"bin": 2, "epochs": 3}, {"bin": 1, "epochs": True}], "stage 2: epochs"),
        ([{"bin": 1, "epochs": 3}, {"bin": 2, "epochs": 1}], "from coarse to fine"),
        ([{"bin": 2, "epochs": 3}, {"bin": 2, "epochs": 1}], "from coarse to fine"),
        ([{"bin": 4, "epochs": 2}, {"bin": 2, "epochs": 2}], r"must end .* \(bin 1\)"),
        (
            [{"bin": 6, "epochs": 1}, {"bin": 4, "epochs": 2}, {"bin": 1, "epochs": 1}],
            r"multiple of the next one's .*\[6, 4, 1\]",
        ),
        (
            [{"bin": 2, "epochs": 3}, {"bin": 1, "epochs": 3}],
            "epochs add up to 6 but train.epochs is 4",
        ),
    ],
)
def test_an_inconsistent_schedule_is_refused_naming_the_key(schedule, message):
    with pytest.raises(ValueError, match="train.resolution_schedule") as error:
        config(resolution_schedule=schedule)
    assert error.match(message)


def test_the_schedule_is_stored_as_plain_numbers_and_read_as_stages():
    parsed = TrainConfig.from_params(
        {"epochs": 4, "resolution_schedule": [{"epochs": 3, "bin": 2}, SCHEDULE[1]]}
    )
    assert parsed.resolution_schedule == SCHEDULE
    stages = schedule_stages(parsed.resolution_schedule, parsed.epochs)
    assert [bin_at(stages, epoch) for epoch in range(1, 5)] == [2, 2, 2, 1]
    assert schedule_stages(None, 4) == schedule_stages([{"bin": 1, "epochs": 4}], 4)
    with pytest.raises(ValueError, match="past the schedule's 4 epochs"):
        bin_at(stages, 5)


def test_the_schedule_keys_the_checkpoint_folder_and_null_leaves_it_as_before():
    data = {"volume_size": 32}
    plain = TrainConfig(epochs=4)
    # Without a schedule the identity is what it was before the option existed.
    assert "resolution_schedule" not in plain.identity()
    assert "fine_stage" not in plain.identity()
    # Fine stages once rebuilt the whole network: the kind of stage is in the
    # identity, so a checkpoint of that kind (same schedule) is never resumed.
    old_kind = {k: v for k, v in config().identity().items() if k != "fine_stage"}
    assert config().identity()["fine_stage"] == "upsampled-correction"
    assert old_kind != config().identity()
    hashes = {
        plain.identity_hash(data),
        config().identity_hash(data),
        config(
            resolution_schedule=[{"bin": 2, "epochs": 2}, {"bin": 1, "epochs": 2}]
        ).identity_hash(data),
        config(
            resolution_schedule=[{"bin": 4, "epochs": 3}, {"bin": 1, "epochs": 1}]
        ).identity_hash(data),
    }
    assert len(hashes) == 4
    assert config().flat_params()["train.resolution_schedule"] == SCHEDULE


def test_views_are_binned_to_block_means():
    views = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    # View 0 rows: 0..5, 6..11, 12..17, 18..23; the block of rows 0-1 and
    # columns 0-1 holds 0, 1, 6, 7: mean 3.5; each block to the right adds 2,
    # each block down 12; view 1 adds 24.
    expected = torch.tensor([[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    binned = bin_views(views, 2)
    assert binned.shape == (2, 2, 3)
    torch.testing.assert_close(binned[0], expected)
    torch.testing.assert_close(binned[1], expected + 24)


def test_volumes_are_binned_to_block_means():
    volume = torch.arange(4**3, dtype=torch.float32).reshape(4, 4, 4)
    # Voxel (i, j, k) holds 16 i + 4 j + k: block (I, J, K) of 2^3 voxels has
    # the mean 16 (2I + 0.5) + 4 (2J + 0.5) + (2K + 0.5) = 32 I + 8 J + 2 K + 10.5.
    index = torch.arange(2, dtype=torch.float32)
    i, j, k = torch.meshgrid(index, index, index, indexing="ij")
    torch.testing.assert_close(bin_volume(volume, 2), 32 * i + 8 * j + 2 * k + 10.5)
    assert bin_volume(volume, 4).item() == pytest.approx(volume.mean().item())


def test_a_binned_detector_and_a_coarsened_cube_keep_the_field():
    geometry = Geometry(detector_px=(8, 12), pixel_mm=1.5)
    binned = geometry.binned(2)
    assert binned.detector_px == (4, 6) and binned.pixel_mm == 3.0
    # Each coarse pixel's centre is the mean of its block's centres: the same rays.
    for fine, coarse in zip(
        detector_offsets_mm(geometry), detector_offsets_mm(binned), strict=True
    ):
        torch.testing.assert_close(fine.view(-1, 2).mean(dim=1), coarse)
    grid = CubeGrid(32, 12.0, (5.0, 0.0, -3.0))
    coarse_grid = grid.coarsened(4)
    assert (coarse_grid.size, coarse_grid.spacing_mm) == (8, 48.0)
    assert coarse_grid.extent_mm == grid.extent_mm
    assert coarse_grid.centre_mm == grid.centre_mm
    np.testing.assert_allclose(
        grid.axis_mm().reshape(-1, 4).mean(axis=1), coarse_grid.axis_mm()
    )
    with pytest.raises(ValueError, match="cannot be binned in blocks of 3"):
        geometry.binned(3)
    with pytest.raises(ValueError, match="cannot be cut into blocks of 3"):
        grid.coarsened(3)


@pytest.mark.parametrize("mirror", [0.0, 1.0], ids=["plain", "mirrored"])
def test_a_coarse_stage_sample_is_the_data_sets_sample_binned(mirror):
    volumes, drr_sets = make_patients(2, size=32)
    ids, angles = sorted(volumes), [0.0, 90.0]
    fine, coarse = (
        ReconstructionDataset(
            volumes,
            drr_sets,
            ids,
            angles,
            augmentation=Augmentation(mirror=mirror),
            binning=binning,
        )
        for binning in (1, 2)
    )
    assert coarse.sample_grid == fine.grid.coarsened(2) != fine.sample_grid
    assert coarse.sample_geometry == fine.geometry.binned(2)
    assert coarse.sample_geometry.detector_px == (16, 16)
    views, target = coarse[1]
    fine_views, fine_target = fine[1]
    assert views.shape == (2, 16, 16) and target.shape == (1, 16, 16, 16)
    # Hand-binned: the mean of each 2 x 2 pixel block, and of each 2^3 voxel block.
    blocks = fine_views.reshape(2, 16, 2, 16, 2).mean(dim=(2, 4))
    torch.testing.assert_close(views, blocks)
    cubes = fine_target[0].reshape(16, 2, 16, 2, 16, 2).mean(dim=(1, 3, 5))
    torch.testing.assert_close(target[0], cubes)
    if not mirror:
        hu = volumes[ids[1]].hu.astype(np.float64)
        unit = to_unit(hu, fine.hu_window).reshape(16, 2, 16, 2, 16, 2)
        np.testing.assert_allclose(target[0], unit.mean(axis=(1, 3, 5)), atol=1e-6)


def test_each_stage_has_its_own_warm_up_and_cosine():
    import math

    from ct_pipeline.training.setup import warmup_cosine

    # Without a schedule: one warm-up of 2 steps, one cosine over the other 8.
    one = warmup_cosine(2, [10])
    assert [one(s) for s in (0, 1)] == [0.5, 1.0]
    assert one(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    # Two stages of 6 and 4 steps: the second warms up again from its first
    # step instead of going on at the first's cosine tail.
    two = warmup_cosine(2, [6, 4])
    assert two(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert [two(6), two(7)] == [0.5, 1.0]
    assert [two(8), two(9)] == pytest.approx([1.0, 0.5])
    # A stage shorter than the warm-up warms up over half of it.
    short = warmup_cosine(4, [8, 2])
    assert [short(8), short(9)] == [1.0, 1.0]
