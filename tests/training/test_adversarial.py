"""The adversarial term: gradient isolation, DDP agreement, resume, and weight 0 changing nothing."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from adversarial_ranks import ANGLES, critic_rank
from ct_pipeline.losses import DEFAULT_WEIGHTS
from ct_pipeline.training import train_model
from ct_pipeline.training.adversarial import Adversary, build_adversary
from ct_pipeline.training.checkpoint import load_checkpoint
from ct_pipeline.training.job import Place
from training_fixtures import (
    GEOMETRY,
    GRID,
    SIZE,
    CrashAfter,
    make_config,
    make_patients,
)

SPLIT = {
    "train": [f"patient_{i:02d}" for i in range(4)],
    "val": ["patient_04"],
    "test": ["patient_05"],
}
CPU = Place(0, 1, torch.device("cpu"))


def adversary() -> Adversary:
    torch.manual_seed(0)
    return Adversary(0.01, GEOMETRY, GRID, 1e-2, CPU)


def generator_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stand-in generator (one conv) with its volume, a target and two views."""
    torch.manual_seed(1)
    generator = nn.Conv3d(1, 1, 3, padding=1)
    volume = generator(torch.rand(2, 1, SIZE, SIZE, SIZE))
    return (
        generator,
        volume,
        torch.rand(2, 1, SIZE, SIZE, SIZE),
        torch.rand(2, 2, 16, 16),
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_discriminator_step_leaves_the_generator_untouched():
    critic = adversary()
    generator, volume, target, views = generator_and_batch()
    before, critic_before = snapshot(generator), snapshot(critic.module)
    critic.discriminator_step(volume, target, views, ANGLES)
    assert all(p.grad is None for p in generator.parameters())
    for name, value in snapshot(generator).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    after = snapshot(critic.module)
    assert any(not torch.equal(after[k], critic_before[k]) for k in after)


def test_the_generator_loss_trains_the_generator_only():
    critic = adversary()
    generator, volume, _, views = generator_and_batch()
    before = snapshot(critic.module)
    critic.generator_loss(volume, views, ANGLES).backward()
    assert all(p.grad is None for p in critic.module.parameters())
    assert all(p.requires_grad for p in critic.module.parameters())  # restored
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters()
    )
    torch.optim.SGD(generator.parameters(), lr=1.0).step()
    for name, value in snapshot(critic.module).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_weight_zero_builds_nothing_and_a_negative_weight_is_refused(tmp_path):
    zero = make_config(tmp_path, loss_weights={**DEFAULT_WEIGHTS, "adversarial": 0.0})
    assert build_adversary(zero, GEOMETRY, GRID, CPU) is None
    negative = make_config(tmp_path, loss_weights={"adversarial": -1.0})
    with pytest.raises(ValueError, match="loss_weights.adversarial must be >= 0"):
        build_adversary(negative, GEOMETRY, GRID, CPU)


@pytest.mark.slow
def test_the_critic_agrees_across_gloo_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(critic_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, value in rank0.items():
        torch.testing.assert_close(value, rank1[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def data():
    return make_patients(6)


@pytest.mark.slow
def test_weight_zero_trains_bit_identically(data, tmp_path):
    volumes, drr_sets = data
    plain = train_model(volumes, drr_sets, SPLIT, make_config(tmp_path / "a"))
    zero = train_model(
        volumes,
        drr_sets,
        SPLIT,
        make_config(tmp_path / "b", loss_weights={"adversarial": 0.0}),
    )
    assert zero.history[-1]["train/loss"] == plain.history[-1]["train/loss"]
    for name, value in plain.best_state_dict.items():
        torch.testing.assert_close(zero.best_state_dict[name], value, rtol=0, atol=0)
    assert "adversarial" not in load_checkpoint(zero.checkpoint_paths["last"])


@pytest.mark.slow
def test_resume_restores_the_critic_and_its_optimiser(data, tmp_path):
    volumes, drr_sets = data
    weights = {"adversarial": 0.01}
    straight = train_model(
        volumes,
        drr_sets,
        SPLIT,
        make_config(tmp_path / "s", epochs=3, loss_weights=weights),
    )
    config = make_config(tmp_path / "r", epochs=3, loss_weights=weights)
    with pytest.raises(KeyboardInterrupt):
        train_model(volumes, drr_sets, SPLIT, config, CrashAfter(1))
    resumed = train_model(volumes, drr_sets, SPLIT, config)
    assert resumed.start_epoch == 2
    # The critic's weights and Adam moments shape the generator's adversarial
    # term and its own loss: both match the uninterrupted run only if restored.
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["train/adversarial"] == pytest.approx(b["train/adversarial"], rel=1e-5)
        assert a["train/discriminator"] == pytest.approx(
            b["train/discriminator"], rel=1e-5
        )
    saved = load_checkpoint(resumed.checkpoint_paths["last"])["adversarial"]
    assert saved["optimizer"]["state"]  # Adam moments, not an empty optimiser
    reference = load_checkpoint(straight.checkpoint_paths["last"])["adversarial"]
    for name, value in reference["model"].items():
        torch.testing.assert_close(saved["model"][name], value, rtol=1e-5, atol=1e-6)


def test_the_checkpoint_identity_changes_with_the_weight(tmp_path):
    def identity(weights: dict[str, float] | None) -> str:
        return make_config(tmp_path, loss_weights=weights).identity_hash({})

    # Weight 0 trains as before the option existed, so its checkpoints resume.
    plain = identity(dict(DEFAULT_WEIGHTS))
    assert identity({**DEFAULT_WEIGHTS, "adversarial": 0.0}) == plain
    with_critic = {identity({**DEFAULT_WEIGHTS, "adversarial": w}) for w in (0.01, 0.1)}
    assert len({plain, *with_critic}) == 3


def test_the_study_adversarial_row_keeps_the_six_terms_and_adds_the_critic():
    from ct_pipeline.evaluation.study import component_variants

    (variant,) = component_variants("small", 2, ["adversarial"])
    assert variant.loss_weights == {**DEFAULT_WEIGHTS, "adversarial": 0.01}
