"""A spawned gloo rank that trains an Adversary on its own data (module level, so picklable)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ct_pipeline.training.adversarial import Adversary
from ct_pipeline.training.job import Place
from training_fixtures import GEOMETRY, GRID, SIZE

ANGLES = torch.tensor([0.0, 90.0])


def critic_rank(rank: int, world_size: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        # Different initial weights per rank: DDP must broadcast rank 0's.
        torch.manual_seed(rank)
        adversary = Adversary(
            0.01,
            GEOMETRY,
            GRID,
            1e-3,
            Place(rank, world_size, torch.device("cpu")),
        )
        torch.manual_seed(100 + rank)  # and different data per rank
        for _ in range(3):
            fake, real = torch.rand(2, 2, 1, SIZE, SIZE, SIZE).unbind(0)
            views = torch.rand(2, 2, *GEOMETRY.detector_px)
            adversary.discriminator_step(fake, real, views, ANGLES)
        torch.save(adversary.state_dict()["model"], Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
