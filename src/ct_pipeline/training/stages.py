"""The stages of the resolution schedule against the model and the data:
checked before training starts, and the weights checked at every carry-over.

The first stage's network is the model built for a coarser grid and
detector; each later stage keeps the one before, frozen, and adds a
correction at its own grid (``models/cascade.py``), so no weight of the
model passes between grids. The critic of the adversarial term does: it is
the same network at every stage, its weights passed by name and shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.metrics import SSIM_WINDOW
from ct_pipeline.models import build_cascade
from ct_pipeline.training.adversarial import adversarial_weight, build_critic
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.job import ModelFactory
from ct_pipeline.training.resolution import KEY, bins_up_to, schedule_stages


def check_same_weights(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raises, naming the first differences, unless ``given`` has the names of
    ``expected`` in the same order (the optimiser's state follows it), each
    with its shape."""
    want = [(name, tuple(t.shape)) for name, t in expected.items()]
    have = [(name, tuple(t.shape)) for name, t in given.items()]
    if want == have:
        return
    shapes, given_shapes = dict(want), dict(have)
    differences = [
        f"{name} {given_shapes.get(name, 'missing')} against {shape}"
        for name, shape in want
        if given_shapes.get(name) != shape
    ] + [f"{name} not in the model" for name in given_shapes if name not in shapes]
    if not differences:
        differences = ["the same weights in another order"]
    raise ValueError(
        f"the weights of {source} differ from the model's ({len(differences)} "
        f"differences, first: {'; '.join(differences[:3])})"
    )


def check_schedule(
    config: TrainConfig,
    model_factory: ModelFactory,
    grid: CubeGrid,
    geometry: Geometry,
) -> None:
    """Raises, naming ``train.resolution_schedule``, unless every stage's bin
    divides the data set's cube (``grid``) and detector, each stage's network
    (the model at the first stage's grid and detector, then a correction per
    later stage, ``build_cascade``) builds and runs there, the critic builds
    there with the weights of the final stage's, and the cube keeps the side
    validation's 3-D SSIM needs.

    Built and run on PyTorch's meta device: shapes only, no memory, no data.
    """
    stages = schedule_stages(config.resolution_schedule, config.epochs)
    bins = [stage.bin for stage in stages]
    if bins == [1]:
        return
    angles = torch.tensor(config.angles)
    final_critic = _critic(config, grid, geometry)
    for factor in bins:
        where = f"{KEY} stage bin {factor}"
        try:
            stage_grid = grid.coarsened(factor)
            stage_geometry = geometry.binned(factor)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if stage_grid.size < SSIM_WINDOW:
            raise ValueError(
                f"{where}: the {grid.size}^3 cube becomes {stage_grid.size}^3, "
                f"smaller than the {SSIM_WINDOW} voxels per side validation's "
                "3-D SSIM needs; use a smaller bin"
            )
        rows, cols = stage_geometry.detector_px
        stage = f"{where} ({stage_grid.size}^3 cube, {rows} x {cols} detector)"
        try:
            with torch.device("meta"):
                network = stage_network(
                    config, model_factory, stage_geometry, stage_grid, factor
                )
            network(torch.zeros(1, len(angles), rows, cols, device="meta"), angles)
            critic = _critic(config, stage_grid, stage_geometry)
        except NotImplementedError:
            raise  # an operation the meta device lacks: not the schedule's fault
        except (ValueError, RuntimeError) as error:
            # The model's own checks raise ValueError; a layer that cannot
            # take the stage's shapes, RuntimeError. The cause stays chained
            # for whoever must tell a bug from a schedule the model refuses.
            raise ValueError(f"{stage}: {error}") from error
        if critic is not None and final_critic is not None and factor != 1:
            try:
                check_same_weights(
                    final_critic.state_dict(), critic.state_dict(), "the coarse critic"
                )
            except ValueError as error:
                raise ValueError(
                    f"{stage}: {error}. The critic's weights pass from stage to "
                    "stage by name and shape, so none may depend on the grid"
                ) from None


def stage_network(
    config: TrainConfig,
    model_factory: ModelFactory,
    geometry: Geometry,
    grid: CubeGrid,
    binning: int,
) -> nn.Module:
    """The network of the stage of ``binning``, for that stage's ``geometry``
    and ``grid``: the model itself at the schedule's first stage (or without
    a schedule), else the stages up to it chained (``build_cascade``)."""
    stages = schedule_stages(config.resolution_schedule, config.epochs)
    return build_cascade(
        lambda g, c: model_factory(config, g, c),
        geometry,
        grid,
        bins_up_to(stages, binning),
        len(config.angles),
    )


def _critic(
    config: TrainConfig, grid: CubeGrid, geometry: Geometry
) -> nn.Module | None:
    """With the adversarial term on, the critic of one stage on the meta device."""
    if adversarial_weight(config) <= 0:
        return None
    with torch.device("meta"):
        return build_critic(geometry, grid)
