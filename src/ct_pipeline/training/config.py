"""Typed training configuration, built from the ``params:train`` dictionary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch

from ct_pipeline.drr.geometry import resolve_angles
from ct_pipeline.metrics import HU_WINDOW
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.resolution import parse_schedule

AMP_MODES = ("auto", "off", "bf16", "fp16")
BACKENDS = ("auto", "nccl", "gloo")
DEVICES = ("auto", "cpu", "cuda")
# The adversarial term's key in loss_weights (training/adversarial.py).
ADVERSARIAL = "adversarial"
# What a resolution schedule's later stages train (models/cascade.py): a
# correction on top of the previous stage's network, frozen and upsampled.
FINE_STAGE = "upsampled-correction"
# Fields that never change the weights: where files go, which hardware runs,
# and how long a rank may wait. Everything else (model, views, target, loss,
# seed, optimiser, schedule, epochs, validation cadence, which picks the best
# epoch) shapes the weights and keys the checkpoint folder, so a run never
# resumes from, or reuses, weights another setup produced. The batch counts
# through the global batch (per device x ranks x accumulation): DDP with the
# same global batch computes the same steps as one process (tested).
NON_IDENTITY_FIELDS = (
    "checkpoint_dir",
    "world_size",
    "batch_size_per_device",
    "grad_accum_steps",
    "device",
    "backend",
    "dist_timeout_s",
    "num_workers",
    "activation_checkpointing",
    "compile",
)


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"train.{name} must be a number, got {value!r}") from None


def run_name(model: str, num_views: int) -> str:
    """What a trained model and its tracking run are called: ``small-2v``."""
    return f"{model}-{num_views}v"


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides the data (see parameters_train.yml)."""

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size_per_device: int = 2
    lr: float = 3e-4
    weight_decay: float = 0.01
    epochs: int = 10
    resolution_schedule: list[dict[str, int]] | None = None  # training/resolution.py
    # Optimiser steps per epoch; None: one pass over the train split. Bounds an
    # epoch (and so the validation cadence) on big data sets.
    steps_per_epoch: int | None = None
    warmup_epochs: float = 1.0
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    amp: str = "auto"
    world_size: int = 1
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_views: int | None = 2
    angles_deg: list[float] | None = None
    hu_window: tuple[float, float] = HU_WINDOW
    loss_weights: dict[str, float] | None = None
    # Random moves and mirrors of the patient with re-rendered views (training/augment.py).
    augment: dict[str, float] = field(default_factory=dict)
    perceptual: str | None = None
    # The project sets it (parameters_train.yml); the library names no data layout.
    checkpoint_dir: str = "checkpoints"
    validate_every: int = 1
    dist_timeout_s: float = 600.0
    # DataLoader worker processes per rank reading patients from disk (0: the
    # rank itself reads them, enough for the demo's 32^3 cubes).
    num_workers: int = 0
    # Memory and speed switches for GPUs; neither changes the numbers (tested).
    # Chunked, recomputed lifting and U-Net blocks (models/memory.py).
    activation_checkpointing: bool = False
    # torch.compile the network (Inductor; CPU needs a C compiler).
    compile: bool = False

    def __post_init__(self) -> None:
        # YAML reads "1e-3" as a string; numbers are coerced once, here.
        for name in ("lr", "weight_decay", "warmup_epochs", "dist_timeout_s"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        if self.grad_clip is not None:
            object.__setattr__(
                self, "grad_clip", _as_float("grad_clip", self.grad_clip)
            )

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be an integer >= 1, got {value!r}")

        for name in (
            "batch_size_per_device",
            "epochs",
            "grad_accum_steps",
            "world_size",
            "validate_every",
        ):
            positive_int(name)
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(
                f"train.weight_decay must be >= 0, got {self.weight_decay!r}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"train.warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(
                f"train.grad_clip must be > 0 or null (off), got {self.grad_clip!r}"
            )
        for name, allowed in (
            ("amp", AMP_MODES),
            ("backend", BACKENDS),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"train.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < 0
        ):
            raise ValueError(
                f"train.num_workers must be an integer >= 0, got {self.num_workers!r}"
            )
        for name in ("activation_checkpointing", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"train.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.steps_per_epoch is not None:
            positive_int("steps_per_epoch")
        if self.dist_timeout_s <= 0:
            raise ValueError(
                f"train.dist_timeout_s must be > 0, got {self.dist_timeout_s!r}"
            )
        window = tuple(float(v) for v in self.hu_window)
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(
                f"train.hu_window must be [low, high] with low < high, got {self.hu_window!r}"
            )
        object.__setattr__(self, "hu_window", window)
        if self.angles_deg is not None:
            object.__setattr__(self, "angles_deg", [float(a) for a in self.angles_deg])
        # Raises on a missing or inconsistent view choice, before anything runs.
        _ = self.angles
        object.__setattr__(self, "model_overrides", dict(self.model_overrides or {}))
        if self.resolution_schedule is not None:
            stages = parse_schedule(self.resolution_schedule, self.epochs)
            object.__setattr__(self, "resolution_schedule", [asdict(s) for s in stages])
        object.__setattr__(
            self, "augment", Augmentation.from_dict(self.augment).to_dict()
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """Build from ``params:train``; unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"unknown train parameters {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**dict(params))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (stored in checkpoints loaded with weights_only=True)."""
        data = dataclasses.asdict(self)
        data["hu_window"] = list(self.hu_window)
        return data

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def global_batch(self) -> int:
        """Samples per optimiser step over all ranks."""
        return self.batch_size_per_device * self.world_size * self.grad_accum_steps

    @cached_property
    def angles(self) -> tuple[float, ...]:
        """The view angles the model learns from: num_views / angles_deg resolved
        once (cached_property writes the instance dict, so frozen is no obstacle)."""
        return tuple(resolve_angles(self.num_views, self.angles_deg))

    def flat_params(
        self, prefix: str = "train"
    ) -> dict[str, str | float | int | bool | None]:
        """``{"train.lr": 0.0003, "train.model_overrides.depth": 2, ...}`` for trackers."""
        flat: dict[str, Any] = {}

        def visit(key: str, value: Any) -> None:
            if isinstance(value, Mapping):
                for sub_key, sub_value in value.items():
                    visit(f"{key}.{sub_key}", sub_value)
            else:
                flat[key] = value

        for name, value in self.to_dict().items():
            visit(f"{prefix}.{name}", value)
        return flat

    def identity(self) -> dict[str, Any]:
        """The weight-shaping fields (see NON_IDENTITY_FIELDS), plain types."""
        identity = {
            name: value
            for name, value in self.to_dict().items()
            if name not in NON_IDENTITY_FIELDS
        }
        identity["global_batch"] = self.global_batch
        weights = identity["loss_weights"]
        if weights is not None and weights.get(ADVERSARIAL) == 0:
            # Weight 0 builds no critic: the same weights as without the key,
            # so checkpoints from before the option still resume.
            identity["loss_weights"] = {
                k: v for k, v in weights.items() if k != ADVERSARIAL
            }
        if identity["resolution_schedule"] is None:  # likewise: folders keep their hash
            del identity["resolution_schedule"]
        else:
            # Fine stages once rebuilt the whole network at the finer grid;
            # they now add a correction to the frozen coarse network (the
            # weights differ in kind), so no checkpoint of the old kind resumes.
            identity["fine_stage"] = FINE_STAGE
        return identity

    def identity_hash(self, data_signature: Mapping[str, Any]) -> str:
        """Short hash of every weight-shaping field plus the data's signature (grid, geometry, split)."""
        identity = self.identity()
        identity["angles"] = self.angles
        payload = json.dumps(
            {"config": identity, "data": dict(data_signature)},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def resolve_device(self, ranks_on_this_host: int | None = None) -> str:
        """'cuda' or 'cpu'; asking for more GPUs than this host has is an error.

        ``ranks_on_this_host`` is world_size for single-host runs and torchrun's
        LOCAL_WORLD_SIZE for multi-node ones (one GPU per local rank).
        """
        local = self.world_size if ranks_on_this_host is None else ranks_on_this_host
        cuda = torch.cuda.is_available()
        device = ("cuda" if cuda else "cpu") if self.device == "auto" else self.device
        if device == "cuda":
            available = torch.cuda.device_count() if cuda else 0
            if local > available:
                raise ValueError(
                    f"{local} ranks on this host need {local} CUDA GPU(s) (one per rank), "
                    f"but {available} are available; lower train.world_size or use device: cpu"
                )
        return device

    def resolve_backend(self, device: str) -> str:
        backend = (
            ("nccl" if device == "cuda" else "gloo")
            if self.backend == "auto"
            else self.backend
        )
        if backend == "nccl" and device != "cuda":
            raise ValueError(
                f"train.backend nccl needs device cuda, got device {device!r}"
            )
        return backend

    def resolve_amp(self, device: str) -> str:
        """'off', 'bf16' or 'fp16'. CPU trains in fp32: autocast there is slow and unneeded."""
        amp = (
            ("bf16" if device == "cuda" else "off") if self.amp == "auto" else self.amp
        )
        if amp != "off" and device != "cuda":
            raise ValueError(
                f"train.amp {amp!r} needs device cuda (CPU trains in fp32), got {device!r}"
            )
        return amp
