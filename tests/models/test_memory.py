"""Activation checkpointing changes memory, never the numbers."""

import torch

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models import build_cascade, build_model
from ct_pipeline.models.memory import enable_activation_checkpointing

GEOMETRY = Geometry(detector_px=(32, 32), pixel_mm=18.0)
GRID = CubeGrid(16, 24.0)


def _step(model, views, angles, target):
    out = model(views, angles)
    loss = (out["volume"] - target).abs().mean() + sum(d.mean() for d in out["deep"])
    loss.backward()
    return out["volume"].detach(), {
        name: p.grad.clone()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def test_checkpointed_model_matches_the_plain_one_in_values_and_gradients():
    torch.manual_seed(0)
    plain = build_model("small", GEOMETRY, GRID, 2).train()
    recomputed = build_model("small", GEOMETRY, GRID, 2).train()
    recomputed.load_state_dict(plain.state_dict())
    # 500 voxels a chunk: the 16^3 level lifts in 9 chunks, the 8^3 one in 2.
    enable_activation_checkpointing(recomputed, lift_chunk_voxels=500)
    assert recomputed.state_dict().keys() == plain.state_dict().keys()
    views, angles = torch.rand(2, 2, 32, 32) * 4, torch.tensor([0.0, 90.0])
    target = torch.rand(2, 1, 16, 16, 16)
    volume, grads = _step(plain, views, angles, target)
    volume_r, grads_r = _step(recomputed, views, angles, target)
    torch.testing.assert_close(volume_r, volume, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_r.keys() and len(grads) > 50
    for name, grad in grads.items():
        torch.testing.assert_close(grads_r[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # inference takes the chunks without recomputation
        torch.testing.assert_close(recomputed(views, angles)["volume"], volume)


def test_a_fine_stage_recomputes_its_correction_with_the_same_numbers():
    torch.manual_seed(0)

    def cascade():
        return build_cascade(
            lambda geometry, grid: build_model("tiny", geometry, grid, 2),
            GEOMETRY,
            CubeGrid(32, 12.0),
            [2, 1],
            2,
        ).train()

    plain, recomputed = cascade(), cascade()
    with torch.no_grad():  # a head away from 0, so that gradients flow back
        plain.correction.head.weight.normal_()
    recomputed.load_state_dict(plain.state_dict())
    enable_activation_checkpointing(recomputed, lift_chunk_voxels=5000)
    assert recomputed.lift.chunk_voxels == 5000
    # Wrapped (an instance's own forward), the coarse network's blocks too.
    blocks = [*recomputed.correction.blocks(), *recomputed.coarse.unet.encoders]
    assert all("forward" in vars(block) for block in blocks)
    views, angles = torch.rand(2, 2, 32, 32) * 4, torch.tensor([0.0, 90.0])
    target = torch.rand(2, 1, 32, 32, 32)
    volume, grads = _step(plain, views, angles, target)
    volume_r, grads_r = _step(recomputed, views, angles, target)
    torch.testing.assert_close(volume_r, volume, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_r.keys()
    assert "correction.stem.0.weight" in grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_r[name], grad, rtol=1e-4, atol=1e-6, msg=name)
