"""Overfit proof: the tiny hybrid memorises 8 phantoms from their DRRs.

8 procedural chest phantoms (32^3 at 12 mm, the demo grid; ``--data blobs``
for random HU ellipsoids instead), rendered with the
project's own projector (default cone-beam geometry, 64 x 64 detector) at
default_angles(num_views); the tiny hybrid trains on all 8 with AdamW and the
full six-term loss. Pass: the training loss falls at least 10x. Writes
benchmarks/results/overfit_tiny.png and a section of benchmarks/results/models.md.

    .venv/bin/python benchmarks/overfit_tiny.py [--steps 600]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from bench_models import write_report  # sibling script: benchmarks/ is on sys.path
from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.drr.projector import render_drrs
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.metrics import psnr_3d
from ct_pipeline.models import build_model, count_parameters
from ct_pipeline.phantoms.chest import generate_phantoms

RESULTS = Path(__file__).parent / "results"
HU_WINDOW = (-1000.0, 1500.0)
logger = logging.getLogger(__name__)


def ellipsoid_phantoms(n: int, grid: CubeGrid, seed: int = 0) -> dict[str, CTVolume]:
    """Random blobs in HU: a soft-tissue body ellipsoid in air holding lung-like,
    fat-like and bone-like ellipsoids (for when the chest phantoms are not wanted)."""
    rng = np.random.default_rng(seed)
    axis = grid.axis_mm()
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    half = grid.extent_mm / 2
    volumes = {}
    for i in range(n):
        hu = np.full((grid.size,) * 3, -1000.0, dtype=np.float32)
        blobs = [((0, 0, 0), rng.uniform(0.6, 0.85, 3) * half, 40.0)]
        for value in (-800.0, -800.0, -100.0, 1000.0, 300.0):
            blobs.append(
                (
                    rng.uniform(-0.35, 0.35, 3) * half,
                    rng.uniform(0.1, 0.3, 3) * half,
                    value,
                )
            )
        for centre, radii, value in blobs:
            inside = sum(
                ((c - m) / r) ** 2
                for c, m, r in zip((x, y, z), centre, radii, strict=True)
            )
            hu[inside <= 1] = value
        volumes[f"blobs_{i:03d}"] = CTVolume(hu=hu, affine=grid.affine)
    return volumes


def make_data(
    n: int, grid: CubeGrid, num_views: int, geometry: Geometry, data: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """views (n, V, H, W), angles (V,), targets (n, 1, D, D, D) in [0, 1]."""
    angles = default_angles(num_views)
    if data == "phantoms":
        phantoms = generate_phantoms(
            n, seed=0, size_vox=grid.size, spacing_mm=grid.spacing_mm
        )
    else:
        phantoms = ellipsoid_phantoms(n, grid)
    views = np.stack([render_drrs(ct, geometry, angles) for ct in phantoms.values()])
    low, high = HU_WINDOW
    targets = np.stack(
        [(np.clip(ct.hu, low, high) - low) / (high - low) for ct in phantoms.values()]
    )
    return (
        torch.from_numpy(views).float(),
        torch.tensor(angles, dtype=torch.float32),
        torch.from_numpy(targets).float()[:, None],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", choices=["phantoms", "blobs"], default="phantoms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    grid, geometry = CubeGrid(32, 12.0), Geometry()
    views, angles, targets = make_data(8, grid, args.views, geometry, args.data)
    model = build_model(args.config, geometry, grid, args.views)
    loss_fn = ReconstructionLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, args.lr, total_steps=args.steps
    )
    mean_psnr = np.mean([psnr_3d(targets.mean(0), t) for t in targets])

    losses, start = [], time.perf_counter()
    order = torch.randperm(len(targets))
    progress = tqdm(range(args.steps), desc="overfit")
    for step in progress:
        # Mini-batches walk through the 8 volumes; one pass covers all of them.
        first_index = (step * args.batch) % len(targets)
        batch = order[first_index : first_index + args.batch]
        total, _ = loss_fn(model(views[batch], angles), targets[batch])
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(total.item())
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        output = model(views, angles)
        final_loss = loss_fn(output, targets)[0].item()
    prediction = output["volume"]
    psnr = np.mean([psnr_3d(p, t) for p, t in zip(prediction, targets, strict=True)])
    # Mean over one pass through the 8 volumes at the start and at the end.
    window = max(1, len(targets) // args.batch)
    first, last = np.mean(losses[:window]), np.mean(losses[-window:])
    ratio = first / last

    RESULTS.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.semilogy(losses)
    ax.set_xlabel(f"step (batch {args.batch} of the 8 volumes)")
    ax.set_ylabel("six-term loss")
    ax.set_title(f"{args.config} hybrid, {args.views} views: loss / {ratio:.1f}")
    fig.tight_layout()
    fig.savefig(RESULTS / "overfit_tiny.png", dpi=120)
    report = (
        f"## Overfit proof ({args.config}, 8 {args.data} 32^3 @ 12 mm, {args.views} views, "
        f"{args.steps} steps of batch {args.batch}, AdamW lr {args.lr} one-cycle)\n\n"
        f"- parameters: {count_parameters(model):,}\n"
        f"- loss: {first:.4f} (first pass over the 8) -> {last:.4f} (last pass): "
        f"{ratio:.1f}x lower ({'PASS' if ratio >= 10 else 'FAIL'}: needs >= 10x); "
        f"eval-mode loss on all 8 at the end: {final_loss:.4f}\n"
        f"- training-set PSNR: {psnr:.2f} dB (mean-volume baseline {mean_psnr:.2f} dB)\n"
        f"- wall time: {seconds:.0f} s on {args.threads} thread(s), "
        f"{seconds / args.steps:.2f} s/step\n"
        f"- curve: overfit_tiny.png\n"
    )
    (RESULTS / "overfit_tiny.md").write_text(report)
    write_report()
    print(report)


if __name__ == "__main__":
    main()
