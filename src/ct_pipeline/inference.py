"""Reconstruct CT volumes from DRR sets with a trained model; no ground truth needed.

A trained model travels as a ``ModelBundle``: weights, model name and
overrides, imaging geometry, cube grid, views and HU window. On disk it is a
dict of plain types and tensors, so it loads with
``torch.load(weights_only=True)`` and rebuilds the exact network that was
trained.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ct_pipeline.atomic import atomic_path
from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.drr import DRRSet, Geometry
from ct_pipeline.drr.physics import hu_to_mu
from ct_pipeline.drr.projector import project
from ct_pipeline.metrics import ncc, psnr_3d, to_hu
from ct_pipeline.models import build_cascade, build_model, count_parameters
from ct_pipeline.radiographs import (
    NO_SCATTER,
    Film,
    ScatterModel,
    films_to_views,
)


@dataclass(frozen=True)
class Refinement:
    """Physics refinement of the network's volume x0: ``steps`` Adam steps
    (step size ``lr`` in the network's [0, 1] units) on

        mean((P x - p)^2) / mean(p^2) + prior_weight * mean((x - x0)^2)
            + tv_weight * TV(x),

    P the project's renderer, p the input views, x clipped to [0, 1], TV the
    mean isotropic total variation (``total_variation``).

    The network proposes a volume from its learned prior; these steps then
    move it, along the rays, toward a volume that explains what the detector
    measured, and the second term keeps it near the network's proposal where
    the views are not to be trusted exactly (noise, a renderer that models the
    real detector only approximately). The third term suppresses the streaks
    that fitting a few views adds along their rays, which no real anatomy has.

    Args:
        steps: Adam steps, an integer >= 0; 0 turns the refinement off.
        lr: Adam step size in the network's [0, 1] units, > 0.
        prior_weight: Weight of the pull toward the network's volume, >= 0.
        tv_weight: Weight of the total variation, >= 0.

    Raises:
        ValueError: A field is out of range.
    """

    steps: int = 0
    lr: float = 0.01
    prior_weight: float = 0.0
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(
                f"refinement steps must be an integer >= 0, got {self.steps!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"refinement lr must be > 0, got {self.lr!r}")
        if not self.prior_weight >= 0:
            raise ValueError(
                f"refinement prior_weight must be >= 0, got {self.prior_weight!r}"
            )
        if not self.tv_weight >= 0:
            raise ValueError(
                f"refinement tv_weight must be >= 0, got {self.tv_weight!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "prior_weight": self.prior_weight,
            "tv_weight": self.tv_weight,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refinement:
        return cls(
            int(data["steps"]),
            float(data["lr"]),
            float(data["prior_weight"]),
            # Bundles written before the term existed refine as they did.
            float(data.get("tv_weight", 0.0)),
        )


@dataclass(frozen=True)
class ModelBundle:
    """Trained weights with everything that rebuilds and labels them.

    Args:
        state_dict: The network's weights.
        model: Name of the architecture that ``build_model`` builds.
        model_overrides: Architecture options changed from the named model's.
        geometry: Source, detector and beam of the views it was trained on.
        grid: The cube the network predicts, centred on the isocentre (a
            prediction moves it to its DRR set's isocentre).
        angles_deg: The view angles it takes, in the order it takes them.
        hu_window: (low, high) HU that the network's [0, 1] output spans.
        trained_in_run: The tracking run that trained the weights, if any:
            runs that score or use the bundle later are tagged with it.
        refinement: Physics refinement applied after the network.
        dataset_id: The id of the data set's manifest it was trained on, if known.
        split: Patient ids of each part (train / val / test) the weights were
            trained and selected on, so that an evaluation never scores a
            patient they have seen; None in bundles written before it was
            recorded.
        stage_bins: The resolution schedule's bins, coarse to fine, ending at
            1 (``build_cascade``): (1,) for a network trained at ``grid``
            alone.
    """

    state_dict: Mapping[str, torch.Tensor]
    model: str
    model_overrides: Mapping[str, Any]
    geometry: Geometry
    grid: CubeGrid
    angles_deg: tuple[float, ...]
    hu_window: tuple[float, float]
    trained_in_run: str | None = None
    refinement: Refinement = Refinement()
    dataset_id: str | None = None
    split: Mapping[str, tuple[str, ...]] | None = None
    stage_bins: tuple[int, ...] = (1,)

    @property
    def num_views(self) -> int:
        return len(self.angles_deg)

    @property
    def provenance(self) -> str:
        """What a reconstruction's file header says made it (NIfTI ``descrip``:
        80 characters), e.g. ``ct_pipeline small 2 views run 3f2a9c1b0d4e refined``;
        the run is the tracking run that trained the weights."""
        run = (self.trained_in_run or "untracked")[:12]
        refined = " refined" if self.refinement.steps else ""
        return f"ct_pipeline {self.model} {self.num_views} views run {run}{refined}"

    @property
    def n_parameters(self) -> int:
        # Every weight: a scheduled bundle's earlier stages are frozen, not absent.
        return count_parameters(self.network(), trainable_only=False)

    def network(self) -> nn.Module:
        """The trained network, in eval mode on the CPU."""
        network = build_cascade(
            lambda geometry, grid: build_model(
                self.model, geometry, grid, self.num_views, **self.model_overrides
            ),
            self.geometry,
            self.grid,
            self.stage_bins,
            self.num_views,
        )
        network.load_state_dict(self.state_dict)
        return network.eval()

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors: loads with ``torch.load(weights_only=True)``."""
        return {
            "state_dict": dict(self.state_dict),
            "model": self.model,
            "model_overrides": dict(self.model_overrides),
            "geometry": self.geometry.to_dict(),
            "volume_size": self.grid.size,
            "spacing_mm": self.grid.spacing_mm,
            "angles_deg": list(self.angles_deg),
            "hu_window": list(self.hu_window),
            "trained_in_run": self.trained_in_run,
            "refinement": self.refinement.to_dict(),
            "dataset_id": self.dataset_id,
            "split": None
            if self.split is None
            else {part: list(ids) for part, ids in self.split.items()},
            "stage_bins": list(self.stage_bins),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Written atomically: a crash mid-write leaves the previous file whole."""
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelBundle:
        """Read with ``weights_only=True``: a file from elsewhere cannot run code."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise  # torch's own message names the path and says what is wrong
        # torch reports a truncated or damaged file as a bare "[Errno 22]" or a
        # zip-reader message that names no file.
        except (
            OSError,
            RuntimeError,
            EOFError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
        ) as error:
            reason = str(error) or type(error).__name__
            raise ValueError(
                f"{path} is not a readable model bundle (truncated or damaged: "
                f"{reason}); train again (`kedro run --pipelines train`) or "
                "restore the file"
            ) from error
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelBundle:
        low, high = data["hu_window"]
        return cls(
            state_dict=dict(data["state_dict"]),
            model=str(data["model"]),
            model_overrides=dict(data["model_overrides"]),
            geometry=Geometry.from_dict(data["geometry"]),
            grid=CubeGrid(int(data["volume_size"]), float(data["spacing_mm"])),
            angles_deg=tuple(float(a) for a in data["angles_deg"]),
            hu_window=(float(low), float(high)),
            trained_in_run=data.get("trained_in_run"),
            # Bundles written before refinement existed reconstruct as they did.
            refinement=Refinement.from_dict(
                data.get("refinement", Refinement().to_dict())
            ),
            dataset_id=data.get("dataset_id"),
            split=None
            if data.get("split") is None
            else {part: tuple(ids) for part, ids in data["split"].items()},
            # Bundles written before schedules existed hold one network.
            stage_bins=tuple(int(b) for b in data.get("stage_bins", (1,))),
        )


# Line integrals beyond this many times water along the longest chord through
# the cube are no body (bone attenuates about twice as much as water, dense
# metal about four times in the HU range CTs store): a scaling error.
PLAUSIBLE_WATER_FACTOR = 10.0
# Detector noise may put a line integral a little below 0: this fraction of
# the plausible maximum (about 7 mm of water in the demo) is tolerated.
NEGATIVE_TOLERANCE = 1e-3


def check_input(drr_set: DRRSet, bundle: ModelBundle) -> None:
    """Raise ValueError unless ``bundle`` can reconstruct from ``drr_set``: the
    same geometry, the model's views among its angles, and finite line
    integrals a body can make (p >= 0, at most PLAUSIBLE_WATER_FACTOR x water
    along the longest chord through the model's cube)."""
    if drr_set.geometry != bundle.geometry:
        raise ValueError(
            f"DRR set geometry {drr_set.geometry} differs from the model's {bundle.geometry}"
        )
    drr_set.select(bundle.angles_deg)
    p = drr_set.projections
    bad = int(np.count_nonzero(~np.isfinite(p)))
    if bad:
        raise ValueError(
            f"{bad} of {p.size} line integrals are not finite (NaN or inf)"
        )
    chord_mm = math.sqrt(3.0) * bundle.grid.extent_mm
    highest = PLAUSIBLE_WATER_FACTOR * drr_set.mu_water_per_mm * chord_mm
    if p.min() < -NEGATIVE_TOLERANCE * highest:
        raise ValueError(
            f"line integrals must be >= 0 (attenuation is), got down to "
            f"{p.min():.4g}: sign-flipped, or detector intensities instead of "
            "-log(I / I0)?"
        )
    if p.max() > highest:
        raise ValueError(
            f"line integrals up to {p.max():.4g}, more than {highest:.4g} "
            f"({PLAUSIBLE_WATER_FACTOR:g} x water at {drr_set.mu_water_per_mm:g} "
            f"/mm along the {chord_mm:.0f} mm diagonal of the model's cube): "
            "scaled (e.g. x1000), or another unit?"
        )


def views_from_films(
    bundle: ModelBundle,
    films: Sequence[Film],
    mu_water_per_mm: float,
    scatter: ScatterModel = NO_SCATTER,
) -> DRRSet:
    """A patient's films as the views ``bundle`` was trained on: calibrated to
    line integrals on its detector, ``scatter``'s halo taken out of each film
    first, in its view order, isocentre at the origin.

    ``mu_water_per_mm`` is the HU -> mu scale of the training DRRs, with which
    the physics refinement re-renders the volume.
    """
    return films_to_views(
        films, bundle.geometry, bundle.angles_deg, mu_water_per_mm, scatter
    )


@torch.no_grad()
def reconstruct(network: nn.Module, bundle: ModelBundle, drr_set: DRRSet) -> CTVolume:
    """The HU volume (RAS+, true affine) reconstructed from the views the model
    knows: the network's volume, then the bundle's physics refinement.

    Args:
        network: ``bundle.network()``, built once by a caller that
            reconstructs many patients.
        bundle: The trained model: its angles, grid, window and refinement.
        drr_set: The patient's views; it must hold the bundle's angles and
            geometry.

    Raises:
        ValueError: ``drr_set`` does not match the bundle (see ``check_input``).
    """
    check_input(drr_set, bundle)
    views = drr_set.select(bundle.angles_deg)
    output = network(
        torch.from_numpy(views.projections)[None],
        torch.as_tensor(views.angles_deg, dtype=torch.float32),
    )
    # The preprocessed CT's grid is centred on the isocentre by construction,
    # so a prediction overlays its ground truth.
    affine = bundle.grid.centred(drr_set.isocentre_mm).affine
    unit = refine(
        output["volume"][0, 0].float(),
        views,
        affine,
        bundle.refinement,
        bundle.hu_window,
    )
    return CTVolume(
        hu=to_hu(unit.numpy(), bundle.hu_window).astype(np.float32),
        affine=affine,
        description=bundle.provenance,
    )


@torch.no_grad()
def network_volume(
    network: nn.Module, bundle: ModelBundle, drr_set: DRRSet
) -> CTVolume:
    """The network's own HU volume, before the refinement: the volume that
    ``reconstruct`` starts from (same arguments, one forward pass)."""
    alone = dataclasses.replace(bundle, refinement=Refinement())
    return reconstruct(network, alone, drr_set)


@torch.no_grad()
def reproject(volume: CTVolume, views: DRRSet) -> np.ndarray:
    """(V, H, W) DRRs of ``volume`` rendered with the views' geometry,
    angles, isocentre and physics: what the views would be if it were true."""
    mu = hu_to_mu(torch.from_numpy(volume.hu), views.mu_water_per_mm)
    return project(
        mu, volume.affine, views.geometry, views.angles_deg, views.isocentre_mm
    ).numpy()


@torch.no_grad()
def reprojection_scores(
    volume: CTVolume, views: DRRSet, prefix: str = "reprojection"
) -> dict[str, float]:
    """How well ``volume`` explains ``views``: the quality signal that needs no CT.

    The volume's DRRs, rendered with the views' geometry and physics, against
    the views: PSNR (data range: the largest line integral of the views) and
    NCC, per view (``<prefix>/psnr/<angle>deg``) and over all views
    (``<prefix>/psnr``, ``<prefix>/ncc``); ``prefix`` tells the scores of
    several volumes of one patient apart.
    """
    rendered = torch.from_numpy(reproject(volume, views)).double()
    measured = torch.from_numpy(views.projections).double()
    peak = float(measured.max())
    scores = {
        f"{prefix}/psnr": psnr_3d(rendered, measured, peak),
        f"{prefix}/ncc": ncc(rendered, measured),
    }
    for angle, mine, theirs in zip(views.angles_deg, rendered, measured, strict=True):
        scores[f"{prefix}/psnr/{angle:g}deg"] = psnr_3d(mine, theirs, peak)
        scores[f"{prefix}/ncc/{angle:g}deg"] = ncc(mine, theirs)
    return scores


def total_variation(volume: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean isotropic total variation of a (D, H, W) volume: the length of the
    forward-difference gradient per voxel (``eps`` keeps it differentiable
    where the volume is flat)."""
    dz = volume[1:, :-1, :-1] - volume[:-1, :-1, :-1]
    dy = volume[:-1, 1:, :-1] - volume[:-1, :-1, :-1]
    dx = volume[:-1, :-1, 1:] - volume[:-1, :-1, :-1]
    return (dz.square() + dy.square() + dx.square() + eps).sqrt().mean()


def refine(
    unit: torch.Tensor,
    views: DRRSet,
    affine: np.ndarray,
    refinement: Refinement,
    hu_window: tuple[float, float],
) -> torch.Tensor:
    """``refinement`` applied to the network's (D, D, D) volume in [0, 1] (on
    ``affine``'s grid, ``hu_window`` scaled), given the views it was made from."""
    if refinement.steps == 0:
        return unit
    measured = torch.from_numpy(views.projections).to(unit)
    scale = measured.square().mean()
    proposal = unit.detach()
    volume = proposal.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([volume], lr=refinement.lr)
    with torch.enable_grad():
        for _ in range(refinement.steps):
            mu = hu_to_mu(to_hu(volume, hu_window), views.mu_water_per_mm)
            drrs = project(
                mu, affine, views.geometry, views.angles_deg, views.isocentre_mm
            )
            loss = (drrs - measured).square().mean() / scale
            if refinement.prior_weight:
                loss = (
                    loss + refinement.prior_weight * (volume - proposal).square().mean()
                )
            if refinement.tv_weight:
                loss = loss + refinement.tv_weight * total_variation(volume)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                volume.clamp_(0.0, 1.0)
    return volume.detach()
