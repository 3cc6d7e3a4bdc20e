"""Multi-resolution training (``train.resolution_schedule``): stages of epochs
on grids coarser than the data set's, then on its own.

A stage's ``bin`` is how many voxels per side of the data set's cube, and
detector pixels per side of its views, make one: its samples are the data
set's binned, not rendered again. The target cube, in [0, 1], is
average-pooled in bin^3 blocks (the same field at bin times the spacing, as
the loss pools it for the network's coarser heads) and each view's line
integrals are averaged over bin x bin pixels: the views of a detector of bin
times the pitch, along the same rays (``Geometry.binned``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ct_pipeline.models.cascade import check_chained

KEY = "train.resolution_schedule"
# Each epoch's record (and MLflow metric): voxels per side of the grid it
# trained on, which tells a coarse stage's epochs from the data set's own.
RESOLUTION = "resolution"


@dataclass(frozen=True)
class Stage:
    """``epochs`` epochs on the data set's grid coarsened ``bin`` times per side."""

    bin: int
    epochs: int


def parse_schedule(value: Sequence[Mapping[str, Any]], epochs: int) -> list[Stage]:
    """The stages of ``value`` (the parameter as written); raises, naming the
    key, unless bins fall from stage to stage to 1 and the epochs add up to
    ``train.epochs``. Whether the grid and the detector can be binned so is
    checked against the data (``stages.check_schedule``)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(
            f"{KEY} must be a list of stages like [{{bin: 2, epochs: 60}}, "
            f"{{bin: 1, epochs: 20}}] or null, got {value!r}"
        )
    if not value:
        raise ValueError(f"{KEY} must list at least one stage (or be null), got []")
    stages = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) != {"bin", "epochs"}:
            raise ValueError(
                f"{KEY} stage {index + 1} must have exactly the keys bin and "
                f"epochs, got {item!r}"
            )
        for name in ("bin", "epochs"):
            number = item[name]
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(
                    f"{KEY} stage {index + 1}: {name} must be an integer >= 1, "
                    f"got {number!r}"
                )
        stages.append(Stage(item["bin"], item["epochs"]))
    bins = [stage.bin for stage in stages]
    if any(coarse <= fine for coarse, fine in zip(bins, bins[1:], strict=False)):
        raise ValueError(
            f"{KEY} must go from coarse to fine: bins falling from stage to "
            f"stage, got {bins}"
        )
    try:
        check_chained(bins)
    except ValueError as error:
        raise ValueError(f"{KEY}: {error}") from None
    if bins[-1] != 1:
        raise ValueError(
            f"{KEY} must end on the data set's own grid (bin 1), got {bins}: the "
            "model kept is trained and validated there"
        )
    total = sum(stage.epochs for stage in stages)
    if total != epochs:
        raise ValueError(
            f"{KEY}'s epochs add up to {total} but train.epochs is {epochs}: "
            "make them agree"
        )
    return stages


def schedule_stages(
    schedule: Sequence[Mapping[str, int]] | None, epochs: int
) -> list[Stage]:
    """The stages of ``TrainConfig.resolution_schedule`` (checked there);
    without a schedule, a single stage of ``epochs`` on the data set's grid."""
    if schedule is None:
        return [Stage(1, epochs)]
    return [Stage(stage["bin"], stage["epochs"]) for stage in schedule]


def bins_up_to(stages: Sequence[Stage], binning: int) -> list[int]:
    """The bins of the stages up to the one of ``binning``, relative to its
    grid (``build_cascade``'s ``bins``): [4, 2, 1] up to bin 2 gives [2, 1]."""
    bins = [stage.bin for stage in stages]
    return [b // binning for b in bins[: bins.index(binning) + 1]]


def bin_at(stages: Sequence[Stage], epoch: int) -> int:
    """The bin of the stage epoch ``epoch`` (from 1) belongs to."""
    end = 0
    for stage in stages:
        end += stage.epochs
        if epoch <= end:
            return stage.bin
    raise ValueError(f"epoch {epoch} lies past the schedule's {end} epochs")


def bin_views(views: torch.Tensor, factor: int) -> torch.Tensor:
    """(V, H, W) line integrals -> (V, H / factor, W / factor), each the mean
    of its factor x factor block."""
    return F.avg_pool2d(views[None], factor)[0]


def bin_volume(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """(D, D, D) -> (D / factor, ...), each voxel the mean of its factor^3 block."""
    return F.avg_pool3d(volume[None, None], factor)[0, 0]
