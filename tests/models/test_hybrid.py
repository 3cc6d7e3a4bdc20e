"""Shapes, configs and gradient flow of the reconstruction networks."""

from __future__ import annotations

import pytest
import torch

from ct_pipeline.ct import CubeGrid
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.models import build_model, count_parameters

GEOMETRY = Geometry(detector_px=(32, 32), pixel_mm=12.0)
GRID = CubeGrid(16, 24.0)
FINE = CubeGrid(32, 12.0)


def _views(batch: int, num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    views = torch.rand(batch, num_views, *GEOMETRY.detector_px) * 6
    return views, torch.tensor(default_angles(num_views))


@pytest.mark.parametrize("num_views", [2, 4, 8])
def test_output_shapes_for_any_view_count(num_views: int) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", GEOMETRY, GRID)
    out = model(*_views(2, num_views))
    assert out["volume"].shape == (2, 1, 16, 16, 16)
    assert [d.shape for d in out["deep"]] == [(2, 1, n, n, n) for n in (8, 4, 2)]
    assert out["attention"] is None
    assert 0 <= out["volume"].min() and out["volume"].max() <= 1


@pytest.mark.parametrize("name", ["tiny", "small", "unet_tiny", "unet_small"])
def test_each_config_runs(name: str) -> None:
    model = build_model(name, GEOMETRY, GRID, num_views=2)
    out = model(*_views(1, 2))
    assert out["volume"].shape == (1, 1, 16, 16, 16)


def test_medical_has_about_85m_parameters_and_runs_small() -> None:
    with torch.device("meta"):  # counting needs no memory or initialisation time
        full = build_model(
            "medical", Geometry(detector_px=(128, 128)), CubeGrid(128, 3.0)
        )
    assert 80e6 < count_parameters(full) < 90e6
    # Swin windows shrink to the grid, so the same widths run at a tiny volume.
    small = build_model("medical", GEOMETRY, GRID)
    with torch.no_grad():
        assert small(*_views(1, 2))["volume"].shape == (1, 1, 16, 16, 16)


def test_cnn_baseline_is_the_hybrid_without_transformers() -> None:
    hybrid = build_model("small", GEOMETRY, FINE, 2)
    unet = build_model("unet_small", GEOMETRY, FINE, 2)
    names = {n for n, _ in unet.named_parameters()}
    # Hybrid blocks hold the very same conv block, under the name "local".
    hybrid_names = {n.replace(".local.", ".") for n, _ in hybrid.named_parameters()}
    assert names < hybrid_names
    assert not any("cross_view" in n or "globl" in n for n in names)
    assert count_parameters(unet) < count_parameters(hybrid)


def test_no_deep_supervision_gives_empty_list() -> None:
    model = build_model("tiny", GEOMETRY, GRID, deep_supervision=False)
    assert model(*_views(1, 2))["deep"] == []


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model config"):
        build_model("huge", GEOMETRY, GRID)
    with pytest.raises(ValueError, match="unknown model overrides"):
        build_model("tiny", GEOMETRY, GRID, swim=False)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model("tiny", GEOMETRY, CubeGrid(20, 24.0))
    # A bundle records only size and spacing: a network's cube is on the isocentre.
    for name in ("tiny", "bp_unet"):
        with pytest.raises(ValueError, match="centred on the isocentre"):
            build_model(name, GEOMETRY, GRID.centred((0.0, 12.0, 0.0)), 2)
    model = build_model("tiny", GEOMETRY, GRID)
    with pytest.raises(ValueError, match="expected views"):
        model(torch.zeros(1, 2, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="angles_deg"):
        model(torch.zeros(1, 2, 32, 32), torch.zeros(3))


ABLATIONS = [
    {},
    {"swin": False},
    {"cross_view": False},
    {"residual_dense": False},
    {"attention_gates": False},
    {"deep_supervision": False},
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(o) or "full")
def test_every_parameter_gets_a_gradient(overrides: dict[str, bool]) -> None:
    # 32^3 so that level 2 (8^3) really uses shifted windows (window 4, shift 2).
    torch.manual_seed(0)
    model = build_model("tiny", GEOMETRY, FINE, **overrides)

    def backward() -> None:
        model.zero_grad()
        out = model(*_views(2, 3))
        loss = out["volume"].mean() + sum(d.mean() for d in out["deep"])
        loss.backward()

    # The transformer branches sit behind zero-initialised gates: at the first
    # step only the gates learn; after it, gradient reaches every parameter.
    backward()
    gates = [p for n, p in model.named_parameters() if "gate" in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    dead = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not dead, f"zero gradient at {dead}"


def test_concat_fusion_keeps_which_view_a_feature_came_from() -> None:
    """Swapping the two views changes a concat model's output, not a mean/max one's
    (whose fusion is symmetric in the views, up to the angle embedding)."""
    torch.manual_seed(0)
    model = build_model("tiny", GEOMETRY, GRID, 2, view_fusion="concat")
    lifted_a = model.lifts[0](torch.rand(1, 2, 9, 32, 32), torch.tensor([0.0, 90.0]))
    assert lifted_a.shape == (1, 4, 16, 16, 16)
    features = torch.rand(1, 2, 9, 32, 32)
    angles = torch.tensor([0.0, 0.0])  # same rays: only the view order differs
    concat = model.lifts[0](features, angles)
    swapped = model.lifts[0](features.flip(1), angles)
    assert not torch.allclose(concat, swapped)
    mean_max = build_model("tiny", GEOMETRY, GRID).lifts[0]
    torch.testing.assert_close(
        mean_max(features, angles), mean_max(features.flip(1), angles)
    )
    with pytest.raises(ValueError, match="concatenates 2 views, got 3"):
        model(*_views(1, 3))
    with pytest.raises(ValueError, match="needs num_views"):
        build_model("tiny", GEOMETRY, GRID, view_fusion="concat")


def test_backprojection_unet_smears_each_view_along_its_rays() -> None:
    """The reference's input: a bright detector column lights the voxels on its rays."""
    model = build_model("bp_unet", GEOMETRY, GRID, 2)
    views = torch.zeros(1, 2, 32, 32)
    views[0, 0, :, 22:27] = 10.0  # PA view, a band right of centre on the image
    smeared = model.backproject(views, torch.tensor([0.0, 90.0]))[0]  # (2, n, n, n)
    assert smeared[1].abs().max() == 0  # the lateral view was empty
    # PA: the image's right is the patient's left (low i, as +i is the right);
    # the ray crosses the cube front to back, so every j is lit.
    assert smeared[0][:8].sum() > 0 and smeared[0][8:].abs().max() == 0
    assert (smeared[0].sum(dim=(0, 2)) > 0).all()
    out = model(*_views(2, 2))
    assert out["volume"].shape == (2, 1, 16, 16, 16) and out["deep"] == []
    out["volume"].mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="no model overrides"):
        build_model("bp_unet", GEOMETRY, GRID, 2, swin=False)


def test_the_hybrid_starts_as_its_cnn_only_ablation() -> None:
    """Zero-initialised gates: before training, Swin and cross-view attention
    change nothing, so the transformer parts cannot slow the start of training."""
    torch.manual_seed(0)
    hybrid = build_model("tiny", GEOMETRY, FINE)
    cnn = build_model("unet_tiny", GEOMETRY, FINE)
    weights = hybrid.state_dict()

    def in_hybrid(name: str) -> str:  # a Swin-level block keeps its conv as "local"
        parts = name.split(".")
        local = ".".join([*parts[:3], "local", *parts[3:]])
        return local if local in weights else name

    cnn.load_state_dict({n: weights[in_hybrid(n)] for n in cnn.state_dict()})
    views = _views(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(*views)["volume"], cnn(*views)["volume"])
