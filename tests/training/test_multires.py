"""Training through the resolution schedule: the stage switch, resume across
it, DDP, what is logged and kept, and the schedules refused before training."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models import build_cascade
from ct_pipeline.models.cascade import FineStage
from ct_pipeline.training import ReconstructionDataset, train_model
from ct_pipeline.training.checkpoint import load_checkpoint, run_directory
from ct_pipeline.training.job import Place, TrainJob, build_model_from_config
from ct_pipeline.training.loop import train_epoch
from ct_pipeline.training.setup import build_parts, data_signature
from ct_pipeline.training.stages import check_schedule
from ct_pipeline.training.state import next_stage, training_state
from training_fixtures import CrashAfter, make_config, make_patients, one_torch_thread

# The data set's cube; at bin 2, 16^3: the tiny model's floor (a multiple of
# 8) above the 11 voxels per side validation's 3-D SSIM needs.
SIZE = 32
SPLIT = {
    "train": [f"patient_{i:02d}" for i in range(4)],
    "val": ["patient_04", "patient_05"],
}
TWO_STAGES = [{"bin": 2, "epochs": 2}, {"bin": 1, "epochs": 2}]
CPU = Place(0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def data():
    return make_patients(6, size=SIZE)


pytestmark = pytest.mark.usefixtures("one_thread")


def schedule_config(tmp_path, **changes):
    return make_config(
        tmp_path, epochs=4, **{"resolution_schedule": TWO_STAGES, **changes}
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
def test_the_switch_freezes_the_coarse_model_under_a_correction_that_starts_at_zero(
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
    assert isinstance(fine.module, FineStage) and fine.module.factor == 2
    assert fine.module.grid.size == SIZE and coarse.module.grid.size == SIZE // 2
    # The coarse stage's network, every weight as it left it, frozen.
    trained = coarse.module.state_dict()
    frozen = fine.module.coarse.state_dict()
    assert list(frozen) == list(trained)
    for name, weight in frozen.items():
        assert torch.equal(weight, trained[name]), name
    assert not any(p.requires_grad for p in fine.module.coarse.parameters())
    # The optimiser holds the correction's weights alone; the LR schedule
    # goes on where the coarse stage left it.
    own = [p for n, p in fine.module.named_parameters() if not n.startswith("coarse.")]
    assert [id(p) for p in fine.optimizer.param_groups[0]["params"]] == [
        id(p) for p in own
    ]
    assert fine.scheduler.last_epoch == coarse.scheduler.last_epoch == 1
    factor = fine.scheduler.lr_lambdas[0](1)
    assert fine.optimizer.param_groups[0]["lr"] == pytest.approx(job.config.lr * factor)
    # At the switch the fine model is the coarse one upsampled, exactly.
    views, _ = next(iter(fine.loader))
    coarse.module.eval(), fine.module.eval()
    with torch.no_grad():
        expected = F.interpolate(
            coarse.module(F.avg_pool2d(views, 2), coarse.angles)["volume"],
            scale_factor=2,
            mode="trilinear",
        ).clamp(0, 1)
        torch.testing.assert_close(fine.module(views, fine.angles)["volume"], expected)

    if adversarial:  # the critic: rebuilt at the fine grid, its weights carried
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

    before = {n: p.detach().clone() for n, p in fine.module.named_parameters()}
    record = train_epoch(fine, fine.module, None, job.config, CPU, 2)
    assert math.isfinite(record["train/loss"]) and record["resolution"] == SIZE
    assert fine.scheduler.last_epoch == 2
    # One step: the correction's zero head has had a gradient (the layers
    # behind it only weight decay); the coarse network none.
    after = dict(fine.module.named_parameters())
    changed = {n for n, w in before.items() if not torch.equal(after[n], w)}
    assert "correction.head.weight" in changed
    assert not any(name.startswith("coarse.") for name in changed)


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
    config = make_config(tmp_path, resolution_schedule=schedule, validate_every=2)
    result = train_model(volumes, drr_sets, SPLIT, config)
    assert [h["resolution"] for h in result.history] == [16.0, 32.0]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """Four epochs, two at 16^3 then two at 32^3, uninterrupted."""
    volumes, drr_sets = data
    sink = RecordingSink()
    config = schedule_config(tmp_path_factory.mktemp("straight"))
    with one_torch_thread():  # as the tests that compare their runs with it
        return train_model(volumes, drr_sets, SPLIT, config, sink), sink


def test_a_run_goes_through_the_stages_and_keeps_a_final_stage_epoch(straight):
    result, sink = straight
    assert [h["resolution"] for h in result.history] == [16.0, 16.0, 32.0, 32.0]
    assert all(math.isfinite(v) for h in result.history for v in h.values())
    # The kept weights are for the grid the result records: the data set's.
    assert result.best_epoch in (3, 4)
    assert result.grid == CubeGrid(SIZE, 12.0)
    assert result.geometry.detector_px == (SIZE, SIZE)
    config = make_config(".")
    model = build_cascade(
        lambda geometry, grid: build_model_from_config(config, geometry, grid),
        result.geometry,
        result.grid,
        [2, 1],
        2,
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
    config = make_config(tmp_path, resolution_schedule=schedule)
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
        make_config(tmp_path, epochs=4),
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
    common = {"resolution_schedule": schedule}
    two = make_config(tmp_path / "two", world_size=2, batch_size_per_device=2, **common)
    ddp = train_model(volumes, drr_sets, SPLIT, two)
    single = train_model(
        volumes, drr_sets, SPLIT, make_config(tmp_path / "one", **common)
    )
    assert ddp.max_rank_weight_diff == 0.0
    assert [h["resolution"] for h in ddp.history] == [16.0, 32.0]
    # Adam divides by the gradient's size: where it is near 0, the ranks'
    # averaged float sum and one process's differ by a step (seen: 4e-5 on
    # one weight of 1728).
    for name, weight in ddp.best_state_dict.items():
        torch.testing.assert_close(
            weight, single.best_state_dict[name], rtol=1e-4, atol=1e-4, msg=name
        )


def test_a_schedule_the_data_cannot_follow_is_refused_before_anything_is_written(
    data, tmp_path
):
    volumes, drr_sets = data
    # The 32^3 cube binned 4 times: 8^3, too small for validation's 3-D SSIM.
    stages = [{"bin": 4, "epochs": 2}, {"bin": 1, "epochs": 2}]
    config = make_config(tmp_path / "checkpoints", epochs=4, resolution_schedule=stages)
    with pytest.raises(
        ValueError,
        match=r"train.resolution_schedule stage bin 4: the 32\^3 cube becomes 8\^3",
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
    config = make_config(tmp_path, resolution_schedule=stages)
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
    # The critic passes its weights from grid to grid; its own (convolutions,
    # norms) do not depend on the grid, one whose did must be refused.
    monkeypatch.setattr(
        "ct_pipeline.training.stages.build_critic",
        lambda geometry, grid: nn.Linear(grid.size, 1),
    )
    config = make_config(
        tmp_path,
        resolution_schedule=[{"bin": 2, "epochs": 1}, {"bin": 1, "epochs": 1}],
        loss_weights={"adversarial": 0.1},
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
