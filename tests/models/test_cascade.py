"""The coarse-to-fine network of a resolution schedule: a frozen coarse
network upsampled, plus a correction that starts at zero."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models import build_cascade, build_model
from ct_pipeline.models.cascade import FineStage

GEOMETRY = Geometry(detector_px=(32, 32), pixel_mm=18.0)
GRID = CubeGrid(32, 12.0)
ANGLES = torch.tensor([0.0, 90.0])


def tiny(geometry: Geometry, grid: CubeGrid) -> torch.nn.Module:
    return build_model("tiny", geometry, grid, 2)


def views() -> torch.Tensor:
    return torch.rand(2, 2, 32, 32, generator=torch.Generator().manual_seed(0)) * 20


def test_a_new_fine_stage_is_its_coarse_network_upsampled():
    model = build_cascade(tiny, GEOMETRY, GRID, [2, 1], 2).eval()
    assert isinstance(model, FineStage)
    assert model.coarse.grid == CubeGrid(16, 24.0)
    assert model.coarse.geometry.detector_px == (16, 16)
    x = views()
    with torch.no_grad():
        out = model(x, ANGLES)
        coarse = model.coarse(F.avg_pool2d(x, 2), ANGLES)["volume"]
    expected = F.interpolate(coarse, scale_factor=2, mode="trilinear")
    assert out["volume"].shape == (2, 1, 32, 32, 32)
    torch.testing.assert_close(out["volume"], expected.clamp(0, 1))
    assert out["deep"] == []
    with torch.no_grad():
        maps = model(x, ANGLES, return_attention=True)["attention"]
    modules = dict(model.named_modules())
    assert maps and all(name in modules for name in maps)


def test_only_the_correction_learns_and_the_coarse_network_stays_in_eval_mode():
    model = build_cascade(tiny, GEOMETRY, GRID, [2, 1], 2).train()
    assert model.training and not model.coarse.training
    with torch.no_grad():  # a head away from 0, so that gradients flow back
        model.correction.head.weight.fill_(0.1)
    model(views(), ANGLES)["volume"].mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("coarse."))
    learning = [n for n, g in grads.items() if g is not None and g.abs().sum() > 0]
    assert {"lift.fuse.weight", "correction.stem.0.weight"} <= set(learning)
    assert all(not n.startswith("coarse.") for n in learning)


def test_three_stages_nest_each_upsampling_the_one_before():
    grid = CubeGrid(64, 6.0)
    geometry = Geometry(detector_px=(64, 64), pixel_mm=9.0)
    model = build_cascade(tiny, geometry, grid, [4, 2, 1], 2)
    assert model.grid == grid and model.factor == 2
    assert model.coarse.grid == CubeGrid(32, 12.0) and model.coarse.factor == 2
    assert model.coarse.coarse.grid == CubeGrid(16, 24.0)
    assert model.coarse.coarse.geometry.detector_px == (16, 16)
    with torch.device("meta"):
        skipping = build_cascade(tiny, geometry, grid, [4, 1], 2)
    out = skipping(torch.zeros(1, 2, 64, 64, device="meta"), ANGLES)
    assert skipping.factor == 4
    assert out["volume"].shape == (1, 1, 64, 64, 64)


def test_one_stage_is_the_model_itself():
    model = build_cascade(tiny, GEOMETRY, GRID, [1], 2)
    assert not isinstance(model, FineStage) and model.grid == GRID


@pytest.mark.parametrize(
    ("bins", "message"),
    [
        ([2], "must end at 1"),
        ([], "must end at 1"),
        ([4, 3, 1], "multiple of the next"),
    ],
)
def test_stage_bins_that_cannot_chain_are_refused(bins, message):
    with pytest.raises(ValueError, match=message):
        build_cascade(tiny, GEOMETRY, GRID, bins, 2)


def test_fine_views_of_another_detector_are_refused():
    model = build_cascade(tiny, GEOMETRY, GRID, [2, 1], 2)
    with pytest.raises(ValueError, match=r"expected views \(B, V, 32, 32\)"):
        model(torch.zeros(1, 2, 16, 16), ANGLES)
