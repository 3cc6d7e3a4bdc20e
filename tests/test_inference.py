"""The model bundle and the physics refinement that follows the network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.inference import (
    ModelBundle,
    Refinement,
    reconstruct,
    refine,
    reprojection_scores,
    total_variation,
)
from ct_pipeline.metrics import psnr_3d, to_unit
from ct_pipeline.models import build_cascade, build_model

GEOMETRY = Geometry(sad_mm=1000, sdd_mm=1500, detector_px=(32, 32), pixel_mm=18.0)
GRID = CubeGrid(16, 24.0)
ANGLES = (0.0, 90.0)
WINDOW = (-1000.0, 1500.0)


def _phantom() -> CTVolume:
    """A body with a dense off-centre insert, on GRID (centred on world 0)."""
    axis = GRID.axis_mm()
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    hu = np.full((GRID.size,) * 3, -1000.0, dtype=np.float32)
    hu[(x / 140) ** 2 + (y / 110) ** 2 <= 1] = 40.0
    hu[(x - 50) ** 2 + (y + 20) ** 2 + (z - 30) ** 2 <= 40**2] = 900.0
    return CTVolume(hu=hu, affine=GRID.affine)


def _views(ct: CTVolume) -> DRRSet:
    return DRRSet(
        projections=render_drrs(ct, GEOMETRY, list(ANGLES)),
        angles_deg=np.asarray(ANGLES),
        geometry=GEOMETRY,
        isocentre_mm=ct.centre_mm,
    )


def _bundle(refinement: Refinement, state_dict=None) -> ModelBundle:
    return ModelBundle(
        state_dict=state_dict or {},
        model="tiny",
        model_overrides={},
        geometry=GEOMETRY,
        grid=GRID,
        angles_deg=ANGLES,
        hu_window=WINDOW,
        refinement=refinement,
    )


def test_refinement_moves_a_blurred_guess_toward_the_truth():
    truth = _phantom()
    views = _views(truth)
    target = torch.from_numpy(to_unit(truth.hu))
    # What a network that knows the anatomy only roughly might propose: the
    # truth blurred and 10 % too dense.
    guess = (
        torch.nn.functional.avg_pool3d(
            target[None, None], 3, stride=1, padding=1, count_include_pad=False
        )[0, 0]
        * 1.1
    )
    guess = guess.clamp(0, 1)
    refined = refine(guess, views, GRID.affine, Refinement(steps=60), WINDOW)
    assert refined.min() >= 0 and refined.max() <= 1
    assert psnr_3d(refined, target) > psnr_3d(guess, target) + 1.0
    # What the views see now matches: the refined volume's own DRRs.
    before = render_drrs(
        CTVolume(-1000 + 2500 * guess.numpy(), GRID.affine), GEOMETRY, list(ANGLES)
    )
    after = render_drrs(
        CTVolume(-1000 + 2500 * refined.numpy(), GRID.affine), GEOMETRY, list(ANGLES)
    )
    assert (
        np.abs(after - views.projections).mean()
        < 0.3 * np.abs(before - views.projections).mean()
    )


def test_the_prior_weight_keeps_the_volume_near_the_proposal():
    truth = _phantom()
    views = _views(truth)
    guess = torch.full((GRID.size,) * 3, 0.3)
    free = refine(guess, views, GRID.affine, Refinement(steps=30), WINDOW)
    held = refine(
        guess, views, GRID.affine, Refinement(steps=30, prior_weight=100.0), WINDOW
    )
    assert 0 < (held - guess).abs().mean() < 0.5 * (free - guess).abs().mean()


def test_total_variation_of_a_ramp_and_a_step():
    # A ramp of slope 0.1 along one axis: every forward difference is 0.1.
    ramp = (0.1 * torch.arange(6.0))[:, None, None].expand(6, 6, 6)
    assert total_variation(ramp, eps=0.0).item() == pytest.approx(0.1)
    # A step between two halves: only one plane of the 5^3 differences is 1.
    step = torch.zeros(6, 6, 6)
    step[3:] = 1.0
    assert total_variation(step, eps=0.0).item() == pytest.approx(1 / 5)
    assert total_variation(torch.ones(6, 6, 6), eps=0.0).item() == 0.0


def test_the_tv_weight_refines_toward_a_smoother_volume():
    truth = _phantom()
    views = _views(truth)
    guess = torch.full((GRID.size,) * 3, 0.3)
    # With two views the data term alone paints the residual back along the
    # rays (streaks); the TV term keeps the update piecewise smooth.
    plain = refine(
        guess, views, GRID.affine, Refinement(steps=30, prior_weight=3.0), WINDOW
    )
    smooth = refine(
        guess,
        views,
        GRID.affine,
        Refinement(steps=30, prior_weight=3.0, tv_weight=1.0),
        WINDOW,
    )
    assert total_variation(smooth) < 0.8 * total_variation(plain)
    assert (smooth - guess).abs().mean() > 0.01


def test_no_steps_is_the_network_alone():
    guess = torch.rand((GRID.size,) * 3)
    views = _views(_phantom())
    assert torch.equal(refine(guess, views, GRID.affine, Refinement(), WINDOW), guess)


def test_reconstruct_applies_the_bundles_refinement():
    torch.manual_seed(0)
    network = build_model("tiny", GEOMETRY, GRID, 2).eval()
    truth = _phantom()
    views = _views(truth)
    plain = reconstruct(network, _bundle(Refinement()), views)
    refined = reconstruct(network, _bundle(Refinement(steps=30)), views)
    np.testing.assert_allclose(plain.affine, truth.affine)
    target = to_unit(truth.hu)
    assert psnr_3d(
        torch.from_numpy(to_unit(refined.hu)), torch.from_numpy(target)
    ) > psnr_3d(torch.from_numpy(to_unit(plain.hu)), torch.from_numpy(target))


def test_a_reconstruction_file_names_the_model_and_run_that_made_it(tmp_path):
    import nibabel as nib

    from ct_pipeline.ct.io import save_ct

    torch.manual_seed(0)
    network = build_model("tiny", GEOMETRY, GRID, 2).eval()
    bundle = dataclasses.replace(
        _bundle(Refinement(steps=2)), trained_in_run="0123456789abcdef0123"
    )
    volume = reconstruct(network, bundle, _views(_phantom()))
    save_ct(volume, tmp_path / "p.nii.gz")
    header = nib.load(tmp_path / "p.nii.gz").header
    assert header["descrip"].item().decode() == (
        "ct_pipeline tiny 2 views run 0123456789ab refined"
    )


def test_bundle_round_trips_and_old_bundles_reconstruct_unrefined():
    bundle = _bundle(Refinement(steps=7, lr=0.02, prior_weight=3.0, tv_weight=0.03))
    assert ModelBundle.from_dict(bundle.to_dict()) == bundle
    old = bundle.to_dict()
    # Bundles from before the TV term refine without it.
    del old["refinement"]["tv_weight"]
    assert ModelBundle.from_dict(old).refinement.tv_weight == 0.0
    del old["refinement"]
    assert ModelBundle.from_dict(old).refinement == Refinement(steps=0)
    assert dataclasses.replace(bundle, refinement=Refinement()) != bundle


def test_bundle_records_the_split_and_older_bundles_load_without_one():
    split = {"train": ("a", "b"), "val": ("c",), "test": ("d",)}
    bundle = dataclasses.replace(_bundle(Refinement()), split=split)
    assert ModelBundle.from_dict(bundle.to_dict()).split == split
    old = bundle.to_dict()
    del old["split"]
    assert ModelBundle.from_dict(old).split is None


def test_a_scheduled_bundle_rebuilds_its_stages_and_older_bundles_hold_one():
    network = build_cascade(
        lambda geometry, grid: build_model("tiny", geometry, grid, 2),
        GEOMETRY,
        GRID,
        (2, 1),
        2,
    )
    bundle = dataclasses.replace(
        _bundle(Refinement()), state_dict=network.state_dict(), stage_bins=(2, 1)
    )
    loaded = ModelBundle.from_dict(bundle.to_dict())
    assert loaded.stage_bins == (2, 1)
    rebuilt = loaded.network()
    for name, weight in network.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], weight), name
    old = _bundle(Refinement()).to_dict()
    del old["stage_bins"]
    assert ModelBundle.from_dict(old).stage_bins == (1,)


def test_a_truncated_bundle_file_is_named(tmp_path):
    path = tmp_path / "best_model.pt"
    _bundle(Refinement()).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable model bundle") as error:
        ModelBundle.load(path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError):
        ModelBundle.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"prior_weight": -1.0}, "prior_weight"),
        ({"tv_weight": -0.1}, "tv_weight"),
    ],
)
def test_bad_refinement_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        Refinement(**changes)


def test_reprojection_scores_rank_volumes_as_the_truth_does():
    """Without the CT, the reprojection against the input views orders
    reconstructions as their PSNR against the CT does."""
    from scipy.ndimage import gaussian_filter

    truth = _phantom()
    views = _views(truth)
    candidates = [truth] + [
        CTVolume(hu=gaussian_filter(truth.hu, sigma), affine=truth.affine)
        for sigma in (0.7, 1.5, 3.0)
    ]
    true_psnr = [
        psnr_3d(torch.from_numpy(to_unit(c.hu)), torch.from_numpy(to_unit(truth.hu)))
        for c in candidates
    ]
    scores = [reprojection_scores(c, views) for c in candidates]
    assert scores[0]["reprojection/ncc"] == pytest.approx(1.0)
    assert set(scores[0]) == {
        "reprojection/psnr",
        "reprojection/ncc",
        "reprojection/psnr/0deg",
        "reprojection/ncc/0deg",
        "reprojection/psnr/90deg",
        "reprojection/ncc/90deg",
    }
    for key in ("reprojection/psnr", "reprojection/ncc", "reprojection/psnr/90deg"):
        ranked = [s[key] for s in scores]
        assert ranked == sorted(ranked, reverse=True), key
    assert true_psnr == sorted(true_psnr, reverse=True)
