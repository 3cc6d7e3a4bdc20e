"""The training data: (selected DRR views, target volume in [0, 1]) per patient.

Patients are read one at a time, when a sample is asked for: a rank holds
loaders (a file path and a reader, a few hundred bytes a patient), never the
data set, so its memory does not grow with the number of patients. The OS
page cache keeps re-reads cheap; DataLoader workers overlap them with compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ct_pipeline.ct.grid import ORIGIN_MM, CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.metrics import HU_WINDOW, to_unit
from ct_pipeline.progress import progress
from ct_pipeline.training.augment import (
    Augmentation,
    augmented_sample,
    sample_generator,
)
from ct_pipeline.training.resolution import bin_views, bin_volume

T = TypeVar("T")


def load_one(value: T | Callable[[], T]) -> T:
    """A value, or a loader of one (Kedro partitions come as loaders), loaded.

    Typed loosely on purpose: a type checker cannot tell a loader from a value
    that is itself callable.
    """
    return value() if callable(value) else value


class ReconstructionDataset(Dataset):
    """Samples (views (V, H, W) float32, target (1, D, D, D) float32) per patient.

    ``volumes`` and ``drr_sets`` map patient ids to values or to picklable
    loaders of them; a sample loads its patient when asked. Patients are taken
    in sorted id order so that a seeded sampler sees the same index -> patient
    mapping on every rank and in every run. Every patient must share the
    detector geometry and the volume grid of the first one, since the model is
    built for one of each: ``check_all`` verifies that up front (streaming),
    and every sample checks its own patient again.

    ``binning`` > 1 gives the samples of a coarse stage of the resolution
    schedule (training/resolution.py): the sample, augmented as usual, then
    binned onto ``sample_grid`` as seen through ``sample_geometry``.
    """

    def __init__(
        self,
        volumes: Mapping[str, Any],
        drr_sets: Mapping[str, Any],
        patient_ids: Sequence[str],
        angles_deg: Sequence[float],
        hu_window: Sequence[float] = HU_WINDOW,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        binning: int = 1,
    ) -> None:
        self.patient_ids = sorted(patient_ids)
        if not self.patient_ids:
            raise ValueError(
                "ReconstructionDataset needs at least one patient, got none"
            )
        missing = [p for p in self.patient_ids if p not in volumes or p not in drr_sets]
        if missing:
            raise ValueError(f"patients without a volume or a DRR set: {missing}")
        self.angles_deg = [float(a) for a in angles_deg]
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self._volumes = {p: volumes[p] for p in self.patient_ids}
        self._drr_sets = {p: drr_sets[p] for p in self.patient_ids}

        first = self.patient_ids[0]
        volume, drr = self._load(first)
        self.geometry: Geometry = drr.geometry
        # The data set's grid: the patient's cube, centred on the isocentre.
        self.grid = CubeGrid.of(volume, f"patient {first}'s volume").centred(ORIGIN_MM)
        # What the samples are, and so what the network sees.
        self.binning = binning
        self.sample_grid = self.grid.coarsened(binning)
        self.sample_geometry = self.geometry.binned(binning)
        self.mu_water_per_mm = drr.mu_water_per_mm
        # Views of the cube and views of finer anatomy are different data.
        self.anatomy_spacing_mm = drr.anatomy_spacing_mm
        self._check(first, volume, drr)
        self.augmentation = augmentation or Augmentation()
        self.seed, self.epoch = seed, 0

    def _load(self, patient: str) -> tuple[CTVolume, DRRSet]:
        return load_one(self._volumes[patient]), load_one(self._drr_sets[patient])

    def _check(self, patient: str, volume: CTVolume, drr: DRRSet) -> DRRSet:
        """``drr``'s training views; raises, naming the patient, on a mismatch."""
        if drr.geometry != self.geometry:
            raise ValueError(
                f"patient {patient} geometry {drr.geometry} differs from "
                f"{self.patient_ids[0]}'s {self.geometry}"
            )
        if drr.anatomy_spacing_mm != self.anatomy_spacing_mm:
            raise ValueError(
                f"patient {patient}'s views were rendered from {drr.anatomy_spacing_mm} mm "
                f"anatomy, {self.patient_ids[0]}'s from {self.anatomy_spacing_mm} mm: "
                "rerun `kedro run --pipelines drr`"
            )
        if volume.hu.shape != (self.grid.size,) * 3:
            raise ValueError(
                f"patient {patient} volume shape {volume.hu.shape} differs from "
                f"{self.patient_ids[0]}'s {(self.grid.size,) * 3}"
            )
        return drr.select(self.angles_deg)  # raises, naming a view not rendered

    def check_all(self, desc: str = "check patients") -> None:
        """Read every patient once, one at a time, and check it (before training starts)."""
        for patient in progress(self.patient_ids, desc=desc, unit="patient"):
            self._check(patient, *self._load(patient))

    def angles_tensor(self) -> torch.Tensor:
        return torch.tensor(self.angles_deg, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def set_epoch(self, epoch: int) -> None:
        """Augmented samples are drawn anew each epoch (like DistributedSampler)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, target = self._sample(index)
        if self.binning == 1:
            return views, target
        # After augmentation, whose changes of the patient (a mirror, a move)
        # act on the data set's own grid and detector.
        return bin_views(views, self.binning), bin_volume(target[0], self.binning)[None]

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample on the data set's own grid and detector."""
        patient = self.patient_ids[index]
        volume, drr = self._load(patient)
        selected = self._check(patient, volume, drr)
        if not self.augmentation.enabled:
            views = np.ascontiguousarray(selected.projections, dtype=np.float32)
            target = np.asarray(to_unit(volume.hu, self.hu_window), dtype=np.float32)
            return torch.from_numpy(views), torch.from_numpy(target)[None]
        views_t, moved = augmented_sample(
            torch.from_numpy(np.asarray(volume.hu, dtype=np.float32)),
            self.grid,
            self.geometry,
            self.angles_deg,
            self.mu_water_per_mm,
            self.augmentation,
            sample_generator(self.seed, self.epoch, index),
            stored_views=_stored_views(selected),
        )
        return views_t, to_unit(moved, self.hu_window)[None]


def _stored_views(drr: DRRSet) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(views, mirrored views) when the DRR set holds both, else None."""
    if drr.mirrored_projections is None:
        return None
    return (
        torch.from_numpy(np.ascontiguousarray(drr.projections, dtype=np.float32)),
        torch.from_numpy(
            np.ascontiguousarray(drr.mirrored_projections, dtype=np.float32)
        ),
    )
