"""Shared helpers for the training tests: a tiny deterministic data set and
module-level (so picklable for spawned ranks) faulty loss factories.

Module-level on purpose: torch.multiprocessing pickles the factories by
module and name, and each spawned rank imports this module to rebuild them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry, default_angles
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.training.config import TrainConfig

SIZE = 16  # voxels per side: the smallest cube the tiny model and 3-D SSIM accept
SPACING_MM = 24.0
GRID = CubeGrid(SIZE, SPACING_MM)
PIXEL_MM = 36.0
GEOMETRY = Geometry(detector_px=(SIZE, SIZE), pixel_mm=PIXEL_MM)
RENDERED_ANGLES = default_angles(4)


def make_patients(
    n: int, seed: int = 0, size: int = SIZE
) -> tuple[dict[str, CTVolume], dict[str, DRRSet]]:
    """``n`` patients: an ellipsoid body of random size and HU, and views
    derived from it; ``size`` voxels (and detector pixels) per side over the
    same field as GRID and GEOMETRY."""
    rng = np.random.default_rng(seed)
    axis = (np.arange(size) - (size - 1) / 2) / (size / 2)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    spacing_mm = SPACING_MM * SIZE / size
    affine = CubeGrid(size, spacing_mm).affine
    geometry = Geometry(detector_px=(size, size), pixel_mm=PIXEL_MM * SIZE / size)
    volumes, drr_sets = {}, {}
    for index in range(n):
        radii = rng.uniform(0.4, 0.9, size=3)
        inside = (x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1
        hu = np.where(inside, rng.uniform(-100, 400), -1000.0).astype(np.float32)
        volume = CTVolume(hu, affine)
        mu = np.clip(0.02 * (1 + hu / 1000), 0, None) * spacing_mm
        # Axis-aligned line integrals stand in for rendered DRRs (training needs
        # views that depend on the volume, not exact geometry); the 45 and 135
        # degree slots reuse rotated copies.
        sums = [
            mu.sum(axis=1),
            np.rot90(mu, axes=(0, 1)).sum(axis=1),
            mu.sum(axis=0),
            mu.sum(axis=1).T,
        ]
        projections = np.stack([np.rot90(s) for s in sums]).astype(np.float32)
        pid = f"patient_{index:02d}"
        volumes[pid] = volume
        drr_sets[pid] = DRRSet(
            projections, np.asarray(RENDERED_ANGLES), geometry, volume.centre_mm
        )
    return volumes, drr_sets


def saved_patients(
    volumes: dict[str, CTVolume], drr_sets: dict[str, DRRSet], folder: Path
) -> tuple[dict[str, Callable[[], CTVolume]], dict[str, Callable[[], DRRSet]]]:
    """The patients written to files and given back as loaders, as Kedro's catalogue gives them."""
    from ct_pipeline.ct.io import load_ct, save_ct
    from ct_pipeline.datasets.drrset import DRRSetDataset

    folder.mkdir(parents=True, exist_ok=True)
    ct_loaders: dict[str, Callable[[], CTVolume]] = {}
    drr_loaders: dict[str, Callable[[], DRRSet]] = {}
    for pid in volumes:
        save_ct(volumes[pid], folder / f"{pid}.nii.gz")
        ct_loaders[pid] = partial(load_ct, folder / f"{pid}.nii.gz")
        drr_file = DRRSetDataset(str(folder / f"{pid}.npz"))
        drr_file.save(drr_sets[pid])
        drr_loaders[pid] = drr_file.load
    return ct_loaders, drr_loaders


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside: runs compared with each other must sum in
    the same order (the ``one_thread`` fixture; module fixtures use this)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_config(checkpoint_dir: Path, **changes: object) -> TrainConfig:
    base = dict(
        model="tiny",
        num_views=2,
        batch_size_per_device=4,
        lr=2e-3,
        epochs=2,
        warmup_epochs=0.5,
        device="cpu",
        world_size=1,
        checkpoint_dir=str(checkpoint_dir),
    )
    base.update(changes)
    return TrainConfig(**base)


class PoisonedLoss(nn.Module):
    """Returns NaN on its ``at_call``-th call, on ``rank`` only (None: every rank)."""

    def __init__(self, at_call: int, rank: int | None) -> None:
        super().__init__()
        self.inner, self.calls, self.at_call, self.rank = (
            ReconstructionLoss(),
            0,
            at_call,
            rank,
        )

    def forward(
        self, output: dict, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        total, terms = self.inner(output, target)
        this_rank = dist.get_rank() if dist.is_initialized() else 0
        if self.calls == self.at_call and self.rank in (None, this_rank):
            total = total * float("nan")
        return total, terms


def poisoned_loss_rank1_call2(config: TrainConfig) -> nn.Module:
    return PoisonedLoss(at_call=2, rank=1)


def poisoned_loss_call3(config: TrainConfig) -> nn.Module:
    return PoisonedLoss(at_call=3, rank=None)


class DyingLoss(ReconstructionLoss):
    """Rank 1 exits abruptly (no exception, no report) on its second call."""

    calls = 0

    def forward(
        self, output: dict, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        if self.calls == 2 and dist.get_rank() == 1:
            os._exit(3)
        return super().forward(output, target)


def dying_loss(config: TrainConfig) -> nn.Module:
    return DyingLoss()


class CrashAfter:
    """A sink that fails after logging ``epoch``: an interruption after its checkpoint."""

    run_id = None

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        pass

    def log_metrics(self, metrics, step):
        if step == self.epoch:
            raise KeyboardInterrupt(f"simulated interruption after epoch {step}")
