from pathlib import Path

import pytest
import torch
import yaml

from ct_pipeline.training.config import TrainConfig

PARAMETERS = Path(__file__).parents[2] / "conf" / "base" / "parameters_train.yml"


def test_the_project_parameters_build_a_config():
    params = yaml.safe_load(PARAMETERS.read_text())["train"]
    config = TrainConfig.from_params(params)
    assert config.lr == params["lr"] and config.hu_window == tuple(params["hu_window"])
    assert (
        config.model == params["model"]
        and config.loss_weights == params["loss_weights"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.0}, "train.lr must be > 0"),
        ({"batch_size_per_device": 0}, "batch_size_per_device must be an integer >= 1"),
        ({"grad_accum_steps": 1.5}, "grad_accum_steps must be an integer"),
        (
            {"epochs": 3, "warmup_epochs": 3},
            r"warmup_epochs must be in \[0, epochs=3\)",
        ),
        ({"grad_clip": -1.0}, "grad_clip must be > 0 or null"),
        ({"amp": "fp8"}, "train.amp must be one of"),
        ({"device": "tpu"}, "train.device must be one of"),
        ({"hu_window": [1500, -1000]}, "low < high"),
        ({"num_views": 3, "angles_deg": [0, 90]}, "disagrees"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"lr": "fast"}, "train.lr must be a number"),
    ],
)
def test_bad_values_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**change)


def test_yaml_strings_for_numbers_are_coerced():
    assert TrainConfig.from_params({"lr": "1e-3", "grad_clip": "0.5"}).lr == 1e-3


def test_unknown_parameters_are_an_error():
    with pytest.raises(
        ValueError, match=r"unknown train parameters \['learning_rate'\]"
    ):
        TrainConfig.from_params({"learning_rate": 1e-3})


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the CPU resolution of 'auto'"
)
def test_auto_means_fp32_gloo_on_cpu():
    config = TrainConfig()
    assert config.resolve_device() == "cpu"
    assert (
        config.resolve_backend("cpu") == "gloo" and config.resolve_amp("cpu") == "off"
    )
    with pytest.raises(ValueError, match="needs device cuda"):
        TrainConfig(amp="bf16").resolve_amp("cpu")
    with pytest.raises(ValueError, match="nccl needs device cuda"):
        TrainConfig(backend="nccl").resolve_backend("cpu")
    with pytest.raises(
        ValueError, match="need 1 CUDA GPU\\(s\\) .* but 0 are available"
    ):
        TrainConfig(device="cuda").resolve_device()


def test_flat_params_for_trackers():
    flat = TrainConfig(
        lr=1e-3, loss_weights={"l1": 1.0, "ssim": 0.3}, angles_deg=[0, 90]
    ).flat_params()
    assert flat["train.lr"] == 1e-3
    assert flat["train.loss_weights.ssim"] == 0.3
    assert flat["train.angles_deg"] == [0.0, 90.0]
    assert flat["train.hu_window"] == [-1000.0, 1500.0]
    assert all(key.startswith("train.") for key in flat)


def test_identity_hash_covers_every_field_that_shapes_the_weights():
    signature = {"volume_size": 32, "train": ["a", "b"]}
    base = TrainConfig(batch_size_per_device=4).identity_hash(signature)
    # Same global batch, other hardware or paths: the same weights.
    for same in (
        {"world_size": 2, "batch_size_per_device": 2},
        {"grad_accum_steps": 4, "batch_size_per_device": 1},
        {"checkpoint_dir": "elsewhere", "batch_size_per_device": 4},
        {"dist_timeout_s": 5.0, "batch_size_per_device": 4},
    ):
        assert TrainConfig(**same).identity_hash(signature) == base, same
    # A learning-rate sweep or a longer schedule is a new model, never a resume.
    for different in (
        {"lr": 1e-2},
        {"epochs": 50},
        {"batch_size_per_device": 8},
        {"weight_decay": 0.1},
        {"warmup_epochs": 0.0},
        {"validate_every": 2},
        {"model": "small"},
        {"num_views": 4},
        {"hu_window": (-1000, 2000)},
        {"loss_weights": {"l1": 1.0}},
        {"seed": 1},
    ):
        config = TrainConfig(**{"batch_size_per_device": 4, **different})
        assert config.identity_hash(signature) != base, different
    other_split = {**signature, "train": ["a", "c"]}
    assert TrainConfig(batch_size_per_device=4).identity_hash(other_split) != base
