"""Training through the resolution schedule: the stage switch, resume across
it, DDP, what is logged and kept, and the schedules refused before training."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.training import ReconstructionDataset, train_model
from ct_pipeline.training.checkpoint import load_checkpoint, run_directory
from ct_pipeline.training.job import Place, TrainJob, build_model_from_config
from ct_pipeline.training.loop import train_epoch
from ct_pipeline.training.setup import build_parts, data_signature
from ct_pipeline.training.stages import check_schedule
from ct_pipeline.training.state import next_stage, training_state
from training_fixtures import CrashAfter, make_config, make_patients

# The data set's cube; at bin 2, 16^3: the tiny model's floor (a multiple of
# 8) above the 11 voxels per side validation's 3-D SSIM needs.
SIZE = 32
SPLIT = {
    "train": [f"patient_{i:02d}" for i in range(4)],
    "val": ["patient_04", "patient_05"],
}
# The tiny model with a Swin window of 2: its position-bias tables keep their
# shape at both grids (the default window of 4 does not: tested below).
WINDOW_2 = {"model_overrides": {"window": 2}}
TWO_STAGES = [{"bin": 2, "epochs": 2}, {"bin": 1, "epochs": 2}]
CPU = Place(0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def data():
    return make_patients(6, size=SIZE)


pytestmark = pytest.mark.usefixtures("one_thread")


def schedule_config(tmp_path, **changes):
    return make_config(
        tmp_path, epochs=4, **{"resolution_schedule": TWO_STAGES, **WINDOW_2, **changes}
    )


class RecordingSink:
    run_id = None

    def __init__(self) -> None:
        self.params: dict = {}
        self.metrics: dict[int, dict] = {}

    def log_params(self, params):
        self.params.update(params)

    def set_tags(self, tags):
        pass

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)


@pytest.mark.parametrize("adversarial", [0.0, 0.1], ids=["plain", "adversarial"])
def test_the_switch_carries_every_weight_and_the_optimiser_to_the_fine_grid(
    data, tmp_path, adversarial
):
    volumes, drr_sets = data
    weights = {"adversarial": adversarial}
    job = TrainJob(
        volumes, drr_sets, SPLIT, schedule_config(tmp_path, loss_weights=weights)
    )
    coarse = build_parts(job, CPU, 2)
    train_epoch(coarse, coarse.module, None, job.config, CPU, 1)
    fine = next_stage(training_state(coarse), coarse.binning, job, CPU, 1)

    assert fine.train_set.sample_grid == CubeGrid(SIZE, 12.0)
    assert coarse.train_set.sample_grid == CubeGrid(SIZE // 2, 24.0)
    assert fine.train_set.sample_geometry.detector_px == (SIZE, SIZE)
    assert coarse.train_set.sample_geometry.detector_px == (SIZE // 2, SIZE // 2)
    assert fine.module is not coarse.module
    assert fine.module.grid.size == SIZE and coarse.module.grid.size == SIZE // 2
    coarse_weights = dict(coarse.module.named_parameters())
    assert [n for n, _ in fine.module.named_parameters()] == list(coarse_weights)
    for name, weight in fine.module.named_parameters():
        assert torch.equal(weight, coarse_weights[name]), name
    # Adam's moments and the LR schedule go on from where the coarse stage left them.
    old, new = coarse.optimizer.state_dict(), fine.optimizer.state_dict()
    for index, moments in old["state"].items():
        for key, value in moments.items():
            assert torch.equal(new["state"][index][key], value), (index, key)
    assert fine.scheduler.last_epoch == coarse.scheduler.last_epoch == 1
    assert (
        fine.optimizer.param_groups[0]["lr"] == coarse.optimizer.param_groups[0]["lr"]
    )

    if adversarial:  # the critic too: rebuilt at the fine grid, its weights carried
        critic, coarse_critic = fine.adversary.module, coarse.adversary.module
        assert critic.back_projection.grid.size == SIZE
        assert coarse_critic.back_projection.grid.size == SIZE // 2
        carried = coarse_critic.state_dict()
        for name, weight in critic.state_dict().items():
            assert torch.equal(weight, carried[name]), name
        assert (
            fine.adversary.optimizer.state_dict()["state"].keys()
            == coarse.adversary.optimizer.state_dict()["state"].keys()
        )

    record = train_epoch(fine, fine.module, None, job.config, CPU, 2)
    assert math.isfinite(record["train/loss"]) and record["resolution"] == SIZE
    assert fine.scheduler.last_epoch == 2


def test_the_coarse_stage_is_let_go_before_the_fine_one_is_built(
    data, tmp_path, monkeypatch
):
    volumes, drr_sets = data
    built = []

    def build(job, place, binning):
        parts = build_parts(job, place, binning)
        built.append(weakref.ref(parts.module))
        return parts

    def switch(*args):
        # No collection asked: references alone must keep nothing alive.
        assert built[0]() is None, "the coarse model outlives the switch"
        return next_stage(*args)

    monkeypatch.setattr("ct_pipeline.training.loop.build_parts", build)
    monkeypatch.setattr("ct_pipeline.training.loop.next_stage", switch)
    schedule = [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}]
    config = make_config(
        tmp_path, resolution_schedule=schedule, validate_every=2, **WINDOW_2
    )
    result = train_model(volumes, drr_sets, SPLIT, config)
    assert [h["resolution"] for h in result.history] == [16.0, 32.0]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """Four epochs, two at 16^3 then two at 32^3, uninterrupted."""
    volumes, drr_sets = data
    sink = RecordingSink()
    config = schedule_config(tmp_path_factory.mktemp("straight"))
    return train_model(volumes, drr_sets, SPLIT, config, sink), sink


def test_a_run_goes_through_the_stages_and_keeps_a_final_stage_epoch(straight):
    result, sink = straight
    assert [h["resolution"] for h in result.history] == [16.0, 16.0, 32.0, 32.0]
    assert all(math.isfinite(v) for h in result.history for v in h.values())
    # The kept weights are for the grid the result records: the data set's.
    assert result.best_epoch in (3, 4)
    assert result.grid == CubeGrid(SIZE, 12.0)
    assert result.geometry.detector_px == (SIZE, SIZE)
    model = build_model_from_config(
        make_config(".", **WINDOW_2), result.geometry, result.grid
    )
    model.load_state_dict(result.best_state_dict)
    best = load_checkpoint(result.checkpoint_paths["best"])
    assert best["epoch"] == result.best_epoch
    assert {step: m["resolution"] for step, m in sink.metrics.items()} == {
        1: 16.0,
        2: 16.0,
        3: 32.0,
        4: 32.0,
    }
    assert sink.params["train.resolution_schedule"] == TWO_STAGES


def test_a_coarse_epoch_is_never_kept_even_when_it_scores_higher(
    data, tmp_path, monkeypatch
):
    """Epoch 1 at 16^3 is validated against the 16^3 target; epoch 2 alone
    competes for the kept weights, though it scores lower here."""
    volumes, drr_sets = data

    def scores(module, val_set, *rest):  # (PSNR, SSIM), the coarse stage's higher
        return (40.0, 0.9) if val_set.binning == 2 else (20.0, 0.5)

    monkeypatch.setattr("ct_pipeline.training.loop.validate", scores)
    schedule = [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}]
    config = make_config(tmp_path, resolution_schedule=schedule, **WINDOW_2)
    result = train_model(volumes, drr_sets, SPLIT, config)
    assert [h["resolution"] for h in result.history] == [16.0, 32.0]
    assert [h["val/psnr_3d"] for h in result.history] == [40.0, 20.0]
    assert result.best_epoch == 2 and result.best_val_psnr == 20.0
    assert load_checkpoint(result.checkpoint_paths["best"])["epoch"] == 2


@pytest.mark.parametrize("crash_after", [2, 3], ids=["at-the-switch", "after-it"])
def test_resume_across_the_switch_ends_as_an_uninterrupted_run(
    data, tmp_path, straight, crash_after
):
    volumes, drr_sets = data
    config = schedule_config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_model(volumes, drr_sets, SPLIT, config, CrashAfter(crash_after))
    resumed = train_model(volumes, drr_sets, SPLIT, config)
    uninterrupted = straight[0]
    assert resumed.start_epoch == crash_after + 1
    assert [h["resolution"] for h in resumed.history] == [16.0, 16.0, 32.0, 32.0]
    for a, b in zip(resumed.history, uninterrupted.history, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    assert resumed.best_epoch == uninterrupted.best_epoch
    for name, weight in uninterrupted.best_state_dict.items():
        torch.testing.assert_close(
            weight, resumed.best_state_dict[name], rtol=1e-5, atol=1e-6, msg=name
        )


def test_another_schedule_never_reuses_a_checkpoint(data, tmp_path):
    volumes, drr_sets = data
    configs = [
        make_config(tmp_path, epochs=4, **WINDOW_2),
        schedule_config(tmp_path),
        schedule_config(
            tmp_path,
            resolution_schedule=[{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 3}],
        ),
    ]
    patients = ReconstructionDataset(volumes, drr_sets, SPLIT["train"], [0.0, 90.0])
    signature = data_signature(patients, SPLIT, None)
    assert len({run_directory(config, signature) for config in configs}) == 3


@pytest.mark.slow  # spawns two ranks (30 s)
def test_two_ranks_agree_through_the_switch_and_match_one_process(data, tmp_path):
    volumes, drr_sets = data
    schedule = [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}]
    common = {"resolution_schedule": schedule, **WINDOW_2}
    two = make_config(tmp_path / "two", world_size=2, batch_size_per_device=2, **common)
    ddp = train_model(volumes, drr_sets, SPLIT, two)
    single = train_model(
        volumes, drr_sets, SPLIT, make_config(tmp_path / "one", **common)
    )
    assert ddp.max_rank_weight_diff == 0.0
    assert [h["resolution"] for h in ddp.history] == [16.0, 32.0]
    for name, weight in ddp.best_state_dict.items():
        torch.testing.assert_close(
            weight, single.best_state_dict[name], rtol=1e-4, atol=1e-5, msg=name
        )


def test_a_schedule_the_model_cannot_follow_is_refused_before_anything_is_written(
    data, tmp_path
):
    volumes, drr_sets = data
    # The default window of 4 shrinks to the 2^3 bottleneck of a 16^3 grid.
    config = make_config(
        tmp_path / "checkpoints", epochs=4, resolution_schedule=TWO_STAGES
    )
    with pytest.raises(
        ValueError,
        match=r"train.resolution_schedule stage bin 2 \(16\^3 cube, 16 x 16 detector\)"
        r".*bias_table \(27, 2\) against \(343, 2\).*model_overrides.window",
    ):
        train_model(volumes, drr_sets, SPLIT, config)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("schedule", "grid", "detector", "message"),
    [
        ([3, 1], CubeGrid(32, 12.0), (48, 48), "cannot be cut into blocks of 3"),
        ([2, 1], CubeGrid(32, 12.0), (40, 41), "cannot be binned in blocks of 2"),
        ([4, 1], CubeGrid(32, 12.0), (32, 32), "smaller than the 11 voxels"),
        ([4, 1], CubeGrid(48, 8.0), (48, 48), "multiple of 8, got 12"),
        ([2, 1], CubeGrid(32, 12.0), (36, 36), r"divisible by 8, got \(18, 18\)"),
    ],
)
def test_each_stage_must_suit_the_data_and_the_model(
    tmp_path, schedule, grid, detector, message
):
    stages = [{"bin": b, "epochs": 1} for b in schedule]
    config = make_config(tmp_path, resolution_schedule=stages, **WINDOW_2)
    with pytest.raises(
        ValueError, match="train.resolution_schedule stage bin"
    ) as error:
        check_schedule(
            config, build_model_from_config, grid, Geometry(detector_px=detector)
        )
    assert error.match(message)


def test_bp_unet_is_checked_at_its_own_multiple(tmp_path):
    stages = [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}]
    config = make_config(tmp_path, model="bp_unet", resolution_schedule=stages)
    # 16^3, where the hybrid's default Swin window refuses (above), suits it.
    check_schedule(
        config,
        build_model_from_config,
        CubeGrid(32, 12.0),
        Geometry(detector_px=(32, 32)),
    )
    with pytest.raises(ValueError, match=r"stage bin 2 \(18\^3 cube.*multiple of 4"):
        check_schedule(
            config,
            build_model_from_config,
            CubeGrid(36, 12.0),
            Geometry(detector_px=(36, 36)),
        )


class WideKernel(nn.Module):
    """A model whose layer cannot take views under 20 pixels a side."""

    def __init__(self, config, geometry, grid):
        super().__init__()
        self.conv = nn.Conv2d(config.num_views, 1, kernel_size=20)

    def forward(self, views, angles):
        return self.conv(views)


def test_a_layer_that_cannot_take_a_stage_is_reported_as_the_schedules(tmp_path):
    stages = [{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}]
    config = make_config(tmp_path, resolution_schedule=stages)
    with pytest.raises(
        ValueError,
        match=r"train.resolution_schedule stage bin 2 \(16\^3 cube, 16 x 16 "
        r"detector\): .*Kernel size can't be greater",
    ) as error:
        check_schedule(
            config, WideKernel, CubeGrid(32, 12.0), Geometry(detector_px=(32, 32))
        )
    assert isinstance(error.value.__cause__, RuntimeError)


def test_the_critics_weights_are_checked_too(tmp_path, monkeypatch):
    # The critic's own (convolutions, norms) do not depend on the grid; one
    # whose did must be refused like the model's.
    monkeypatch.setattr(
        "ct_pipeline.training.stages.build_critic",
        lambda geometry, grid: nn.Linear(grid.size, 1),
    )
    config = make_config(
        tmp_path,
        resolution_schedule=[{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}],
        loss_weights={"adversarial": 0.1},
        **WINDOW_2,
    )
    with pytest.raises(
        ValueError, match=r"stage bin 2 .*the coarse critic.*weight \(1, 16\)"
    ):
        check_schedule(
            config,
            build_model_from_config,
            CubeGrid(32, 12.0),
            Geometry(detector_px=(32, 32)),
        )
