"""The training data: (selected DRR views, target volume in [0, 1]) per patient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.metrics import HU_WINDOW, to_unit
from ct_pipeline.training.augment import (
    Augmentation,
    augmented_sample,
    sample_generator,
)


class ReconstructionDataset(Dataset):
    """Samples (views (V, H, W) float32, target (1, D, D, D) float32) per patient.

    Patients are taken in sorted id order so that a seeded sampler sees the
    same index -> patient mapping on every rank and in every run. Every
    patient must share the detector geometry and the volume grid size, since
    the model is built for one of each.
    """

    def __init__(
        self,
        volumes: Mapping[str, CTVolume],
        drr_sets: Mapping[str, DRRSet],
        patient_ids: Sequence[str],
        angles_deg: Sequence[float],
        hu_window: Sequence[float] = HU_WINDOW,
        augmentation: Augmentation | None = None,
        seed: int = 0,
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

        first = self.patient_ids[0]
        self.geometry: Geometry = drr_sets[first].geometry
        self.volume_shape = volumes[first].hu.shape
        self.spacing_mm = volumes[first].spacing_mm
        for pid in self.patient_ids:
            if drr_sets[pid].geometry != self.geometry:
                raise ValueError(
                    f"patient {pid} geometry {drr_sets[pid].geometry} differs from {first}'s {self.geometry}"
                )
            if volumes[pid].hu.shape != self.volume_shape:
                raise ValueError(
                    f"patient {pid} volume shape {volumes[pid].hu.shape} differs from {first}'s {self.volume_shape}"
                )
        if len(set(self.volume_shape)) != 1:
            raise ValueError(f"volumes must be cubes, got shape {self.volume_shape}")
        if not np.allclose(self.spacing_mm, self.spacing_mm[0], rtol=1e-4):
            raise ValueError(
                f"volumes must have isotropic spacing, got {self.spacing_mm} mm"
            )

        self.augmentation = augmentation or Augmentation()
        self.seed, self.epoch = seed, 0
        self.mu_water_per_mm = drr_sets[first].mu_water_per_mm
        # Augmentation re-renders moved cubes from HU; it keeps them.
        self._hu = (
            [
                torch.from_numpy(np.asarray(volumes[p].hu, dtype=np.float32))
                for p in self.patient_ids
            ]
            if self.augmentation.enabled
            else []
        )
        # Select and convert once: the sets are small and every epoch reuses them.
        self._views = [
            torch.from_numpy(
                np.ascontiguousarray(
                    drr_sets[p].select(self.angles_deg).projections, dtype=np.float32
                )
            )
            for p in self.patient_ids
        ]
        self._targets = [
            torch.from_numpy(
                np.asarray(to_unit(volumes[p].hu, self.hu_window), dtype=np.float32)
            )[None]
            for p in self.patient_ids
        ]

    @property
    def volume_size(self) -> int:
        return int(self.volume_shape[0])

    @property
    def voxel_mm(self) -> float:
        return float(self.spacing_mm[0])

    def angles_tensor(self) -> torch.Tensor:
        return torch.tensor(self.angles_deg, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def set_epoch(self, epoch: int) -> None:
        """Augmented samples are drawn anew each epoch (like DistributedSampler)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.augmentation.enabled:
            return self._views[index], self._targets[index]
        views, moved = augmented_sample(
            self._hu[index],
            self.voxel_mm,
            self.geometry,
            self.angles_deg,
            self.mu_water_per_mm,
            self.augmentation,
            sample_generator(self.seed, self.epoch, index),
        )
        return views, to_unit(moved, self.hu_window)[None]
