"""train_model end to end on tiny volumes: DDP equivalence, resume, failures, tracking."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.training import NonFiniteLossError, train_model
from ct_pipeline.training.checkpoint import load_checkpoint
from ct_pipeline.training.job import build_model_from_config
from training_fixtures import (
    CrashAfter,
    dying_loss,
    make_config,
    make_patients,
    poisoned_loss_call3,
    poisoned_loss_rank1_call2,
    saved_patients,
)

TRAIN = [f"patient_{i:02d}" for i in range(8)]
VAL = ["patient_08", "patient_09"]
SPLIT = {"train": TRAIN, "val": VAL, "test": ["patient_10"]}


@pytest.fixture(scope="module")
def data():
    return make_patients(11)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ddp_and_single(data, tmp_path_factory):
    """The same global batch (4) as 2 ranks x 2 and as 1 process x 4, tracked in MLflow.

    The ranks read their patients from files through loaders, as the train
    node hands them over, each with a DataLoader worker process; the single
    process holds them in memory.
    """
    from mlflow.tracking import MlflowClient

    from ct_pipeline.datasets.mlflow_sink import MlflowSink

    tmp = tmp_path_factory.mktemp("ddp")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(
        client.create_experiment(
            "training-test", artifact_location=str(tmp / "artifacts")
        )
    )
    volumes, drr_sets = data
    on_disk = saved_patients(volumes, drr_sets, tmp / "patients")
    two = make_config(tmp / "two", world_size=2, batch_size_per_device=2, num_workers=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    ddp = train_model(
        *on_disk,
        SPLIT,
        two,
        MlflowSink(uri, run.info.run_id),
    )
    single = train_model(volumes, drr_sets, SPLIT, make_config(tmp / "one"))
    torch.set_num_threads(previous)
    return {
        "ddp": ddp,
        "single": single,
        "client": client,
        "run_id": run.info.run_id,
        "config": two,
    }


def test_two_ranks_end_with_identical_weights(ddp_and_single):
    assert ddp_and_single["ddp"].max_rank_weight_diff == 0.0


def test_two_ranks_match_one_process_with_the_same_global_batch(ddp_and_single, data):
    ddp, single = ddp_and_single["ddp"], ddp_and_single["single"]
    assert (
        [h["epoch"] for h in ddp.history]
        == [1, 2]
        == [h["epoch"] for h in single.history]
    )
    torch.manual_seed(0)
    initial = build_model_from_config(
        ddp_and_single["config"], *_grid(data)
    ).state_dict()
    moved = max(
        (ddp.best_state_dict[k] - initial[k]).abs().max().item() for k in initial
    )
    assert moved > 1e-3, "training should have changed the weights"
    assert ddp.best_state_dict.keys() == single.best_state_dict.keys()
    for name, weight in ddp.best_state_dict.items():
        torch.testing.assert_close(
            weight, single.best_state_dict[name], rtol=1e-4, atol=1e-5, msg=name
        )
    for a, b in zip(ddp.history, single.history, strict=True):
        for key in ("train/loss", "train/l1", "val/psnr_3d", "val/ssim_3d", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_mlflow_run_holds_params_and_one_point_per_epoch(ddp_and_single):
    client, run_id = ddp_and_single["client"], ddp_and_single["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["train.world_size"] == "2"
    assert run.data.params["train.model"] == "tiny"
    assert float(run.data.params["train.lr"]) == ddp_and_single["config"].lr
    for key in (
        "train/loss",
        "train/l1",
        "train/deep_supervision",
        "val/psnr_3d",
        "val/ssim_3d",
        "lr",
        "train/samples_per_s",
    ):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key  # rank 0 alone logs
    psnr = {m.step: m.value for m in client.get_metric_history(run_id, "val/psnr_3d")}
    assert psnr[2] == pytest.approx(ddp_and_single["ddp"].history[1]["val/psnr_3d"])


def test_mlflow_run_holds_the_best_epochs_metrics(ddp_and_single):
    client, run_id = ddp_and_single["client"], ddp_and_single["run_id"]
    metrics = client.get_run(run_id).data.metrics
    history = ddp_and_single["ddp"].history
    best = max(history, key=lambda r: r["val/psnr_3d"])
    assert metrics["best/epoch"] == best["epoch"] == ddp_and_single["ddp"].best_epoch
    assert metrics["best/val_psnr_3d"] == pytest.approx(best["val/psnr_3d"])
    assert metrics["best/val_ssim_3d"] == pytest.approx(best["val/ssim_3d"])


def test_best_epoch_metrics_are_those_of_the_best_epoch_not_the_last():
    from ct_pipeline.training.report import best_epoch_metrics, closing_line

    history = [
        {"epoch": 1, "train/loss": 0.5, "val/psnr_3d": 20.0, "val/ssim_3d": 0.5},
        {"epoch": 2, "train/loss": 0.4, "val/psnr_3d": 24.0, "val/ssim_3d": 0.7},
        {"epoch": 3, "train/loss": 0.3, "val/psnr_3d": 23.0, "val/ssim_3d": 0.8},
    ]
    best = best_epoch_metrics(history, best_epoch=2)
    assert best == {
        "best/epoch": 2.0,
        "best/val_psnr_3d": 24.0,
        "best/val_ssim_3d": 0.7,
    }
    assert closing_line(best, 3) == (
        "training done: kept epoch 2/3, the best on validation (24.00 dB / SSIM 0.700)"
    )
    assert best_epoch_metrics(history, best_epoch=0) == {}
    assert "no epoch was validated" in closing_line({}, 3)


def test_steps_per_epoch_bounds_an_epoch(data, tmp_path):
    volumes, drr_sets = data
    config = make_config(tmp_path, batch_size_per_device=1, steps_per_epoch=3)
    result = train_model(volumes, drr_sets, SPLIT, config)
    last = load_checkpoint(result.checkpoint_paths["last"])
    # 2 epochs of 3 steps, not of len(TRAIN) = 8.
    assert [s["step"] for s in last["optimizer"]["state"].values()][0] == 6
    with pytest.raises(
        ValueError, match="train.steps_per_epoch must be an integer >= 1"
    ):
        make_config(tmp_path, steps_per_epoch=0)


@pytest.mark.parametrize(
    "switch",
    [
        "activation_checkpointing",
        # Inductor compiles the model: about a minute on 2 cores.
        pytest.param("compile", marks=pytest.mark.slow),
    ],
    ids=["checkpointing", "compile"],
)
def test_gpu_switches_compute_the_eager_loss(data, tmp_path, switch):
    """The GPU switches on the CPU path: activation checkpointing, and
    torch.compile (Inductor). One step an epoch: epoch 1's loss is the initial
    weights'; later ones differ by float rounding amplified by Adam."""
    volumes, drr_sets = data
    changes = {"batch_size_per_device": 8, "warmup_epochs": 0.0}
    eager = train_model(
        volumes, drr_sets, SPLIT, make_config(tmp_path / "e", **changes)
    )
    switched = make_config(tmp_path / "s", **{switch: True}, **changes)
    fast = train_model(volumes, drr_sets, SPLIT, switched)
    assert fast.history[0]["train/loss"] == pytest.approx(
        eager.history[0]["train/loss"], rel=1e-5
    )
    assert fast.history[1]["train/loss"] == pytest.approx(
        eager.history[1]["train/loss"], rel=1e-2
    )
    assert fast.best_state_dict.keys() == eager.best_state_dict.keys()


def test_gradient_accumulation_matches_the_full_batch(data, tmp_path):
    volumes, drr_sets = data
    full = train_model(
        volumes,
        drr_sets,
        SPLIT,
        make_config(tmp_path / "a", epochs=1),
    )
    accum = make_config(
        tmp_path / "b", epochs=1, batch_size_per_device=2, grad_accum_steps=2
    )
    accumulated = train_model(volumes, drr_sets, SPLIT, accum)
    for name, weight in full.best_state_dict.items():
        torch.testing.assert_close(
            weight, accumulated.best_state_dict[name], rtol=1e-4, atol=1e-5, msg=name
        )


def test_resume_continues_after_the_last_finished_epoch(data, tmp_path, caplog):
    volumes, drr_sets = data
    config = make_config(tmp_path / "resumed", epochs=3)
    straight = train_model(
        volumes,
        drr_sets,
        SPLIT,
        make_config(tmp_path / "straight", epochs=3),
    )
    with pytest.raises(KeyboardInterrupt):
        train_model(volumes, drr_sets, SPLIT, config, CrashAfter(1))
    with caplog.at_level(logging.INFO, logger="ct_pipeline.training"):
        resumed = train_model(volumes, drr_sets, SPLIT, config)
    assert "resuming an interrupted run of this setup from epoch 1" in caplog.text
    assert resumed.start_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # Same schedule, data order and optimiser state: the interruption leaves no trace.
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    for name, weight in straight.best_state_dict.items():
        torch.testing.assert_close(
            weight, resumed.best_state_dict[name], rtol=1e-5, atol=1e-6, msg=name
        )
    assert resumed.best_val_psnr == max(h["val/psnr_3d"] for h in resumed.history)
    assert resumed.checkpoint_paths["last"].parent.name.startswith("tiny-")


def test_a_finished_run_is_never_reused_under_another_schedule(data, tmp_path, caplog):
    """Issue: after a finished run, another lr or batch size "resumed" at the last
    epoch, trained nothing and labelled the old weights with the new parameters."""
    volumes, drr_sets = data
    first = train_model(volumes, drr_sets, SPLIT, make_config(tmp_path))
    for change in (
        {"lr": 1e-4},
        {"batch_size_per_device": 2},
        {"epochs": 3},  # a longer schedule is another cosine: a new model
        {"hu_window": (-1000.0, 2000.0)},
    ):
        other = train_model(volumes, drr_sets, SPLIT, make_config(tmp_path, **change))
        assert other.start_epoch == 1, change
        assert other.checkpoint_paths["last"] != first.checkpoint_paths["last"]
    with caplog.at_level(logging.WARNING, logger="ct_pipeline.training"):
        again = train_model(volumes, drr_sets, SPLIT, make_config(tmp_path))
    assert "already finished training (2/2 epochs" in caplog.text
    assert again.start_epoch == 3 and again.history == first.history


def test_a_bad_patient_is_refused_before_anything_is_written(data, tmp_path):
    volumes, drr_sets = data
    shrunk = CTVolume(volumes[VAL[1]].hu[:8, :8, :8], volumes[VAL[1]].affine)
    config = make_config(tmp_path / "checkpoints", world_size=2)
    with pytest.raises(ValueError, match=f"patient {VAL[1]} volume shape"):
        train_model({**volumes, VAL[1]: shrunk}, drr_sets, SPLIT, config)
    assert not (tmp_path / "checkpoints").exists()


def test_nan_loss_stops_the_run_naming_epoch_and_step(data, tmp_path):
    volumes, drr_sets = data
    config = make_config(tmp_path, batch_size_per_device=2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3"):
        train_model(volumes, drr_sets, SPLIT, config, loss_factory=poisoned_loss_call3)


@pytest.mark.slow  # spawns two ranks
def test_nan_on_one_rank_stops_both_ranks(data, tmp_path):
    volumes, drr_sets = data
    config = make_config(tmp_path, world_size=2, batch_size_per_device=1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2"):
        train_model(
            volumes, drr_sets, SPLIT, config, loss_factory=poisoned_loss_rank1_call2
        )


@pytest.mark.slow  # spawns two ranks
def test_a_rank_that_dies_ends_the_run_with_an_error(data, tmp_path):
    volumes, drr_sets = data
    config = make_config(tmp_path, world_size=2, batch_size_per_device=1)
    with pytest.raises(RuntimeError, match="died"):
        train_model(volumes, drr_sets, SPLIT, config, loss_factory=dying_loss)


@pytest.mark.skipif(
    torch.cuda.device_count() >= 2, reason="needs a machine with fewer than 2 GPUs"
)
def test_more_gpus_than_exist_is_a_clear_error(data, tmp_path):
    volumes, drr_sets = data
    config = make_config(tmp_path, device="cuda", world_size=2, amp="off")
    with pytest.raises(
        ValueError,
        match=f"2 ranks on this host need 2 CUDA GPU\\(s\\).*but {torch.cuda.device_count()} are available",
    ):
        train_model(volumes, drr_sets, SPLIT, config)


def _grid(data):
    volumes, drr_sets = data
    return drr_sets[TRAIN[0]].geometry, CubeGrid.of(volumes[TRAIN[0]])


def test_history_values_are_finite(ddp_and_single):
    for record in ddp_and_single["single"].history:
        assert all(math.isfinite(v) for v in record.values())


def test_epoch_line_is_one_readable_line():
    from ct_pipeline.training.report import epoch_line

    record = {
        "epoch": 3,
        "train/loss": 0.123456,
        "val/psnr_3d": 28.314,
        "val/ssim_3d": 0.9123,
        "train/samples_per_s": 12.34,
    }
    assert epoch_line(record, 45, 28.314, 3) == (
        "epoch 3/45  loss 0.1235  val 28.31 dB / SSIM 0.912  best 28.31 dB (3)  12.3 samples/s"
    )
