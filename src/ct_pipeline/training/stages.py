"""The stages of the resolution schedule against the model and the data:
checked before training starts, and the weights checked at every carry-over.

A stage's model is the same network built for a coarser grid and detector;
its weights pass to the next stage's by name. That works only where no
weight's shape depends on the grid: a Swin window shrinks to a level smaller
than it, and its position-bias table with it, so a schedule that takes a
Swin level below the window is refused here, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.metrics import SSIM_WINDOW
from ct_pipeline.training.adversarial import adversarial_weight, build_critic
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.job import ModelFactory
from ct_pipeline.training.resolution import KEY, schedule_stages


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
    divides the data set's cube (``grid``) and detector, the model builds and
    runs at that grid and detector (the critic builds there), each with the
    weights of the final stage's, and the cube keeps the side validation's
    3-D SSIM needs.

    Built and run on PyTorch's meta device: shapes only, no memory, no data.
    """
    stages = schedule_stages(config.resolution_schedule, config.epochs)
    bins = [stage.bin for stage in stages]
    if bins == [1]:
        return
    angles = torch.tensor(config.angles)
    network, critic = _stage_models(config, model_factory, grid, geometry)
    for factor in bins[:-1]:
        where = f"{KEY} stage bin {factor}"
        try:
            coarse_grid = grid.coarsened(factor)
            coarse_geometry = geometry.binned(factor)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if coarse_grid.size < SSIM_WINDOW:
            raise ValueError(
                f"{where}: the {grid.size}^3 cube becomes {coarse_grid.size}^3, "
                f"smaller than the {SSIM_WINDOW} voxels per side validation's "
                "3-D SSIM needs; use a smaller bin"
            )
        rows, cols = coarse_geometry.detector_px
        stage = f"{where} ({coarse_grid.size}^3 cube, {rows} x {cols} detector)"
        try:
            coarse, coarse_critic = _stage_models(
                config, model_factory, coarse_grid, coarse_geometry
            )
            coarse(torch.zeros(1, len(angles), rows, cols, device="meta"), angles)
        except NotImplementedError:
            raise  # an operation the meta device lacks: not the schedule's fault
        except (ValueError, RuntimeError) as error:
            # The model's own checks raise ValueError; a layer that cannot
            # take the coarse shapes, RuntimeError. The cause stays chained
            # for whoever must tell a bug from a schedule the model refuses.
            raise ValueError(f"{stage}: {error}") from error
        for name, fine_module, coarse_module in (
            ("model", network, coarse),
            ("critic", critic, coarse_critic),
        ):
            if fine_module is None or coarse_module is None:
                continue
            try:
                check_same_weights(
                    fine_module.state_dict(),
                    coarse_module.state_dict(),
                    f"the coarse {name}",
                )
            except ValueError as error:
                raise ValueError(
                    f"{stage}: {error}. Weights pass from stage to stage by name "
                    "and shape, so none may depend on the grid; a Swin window "
                    "wider than a level of the coarse grid shrinks to it (its "
                    "position-bias table with it): use a smaller bin, or a "
                    "smaller train.model_overrides.window"
                ) from None


def _stage_models(
    config: TrainConfig,
    model_factory: ModelFactory,
    grid: CubeGrid,
    geometry: Geometry,
) -> tuple[nn.Module, nn.Module | None]:
    """The network and, with the adversarial term on, the critic of one stage,
    on the meta device."""
    with torch.device("meta"):
        network = model_factory(config, geometry, grid)
        critic = (
            build_critic(geometry, grid) if adversarial_weight(config) > 0 else None
        )
    return network, critic
