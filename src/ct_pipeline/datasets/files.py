"""Kedro datasets for plain files: PNG bytes and torch state dicts."""

from __future__ import annotations

from typing import Any

import torch

from ct_pipeline.atomic import atomic_path, write_bytes_atomic
from ct_pipeline.datasets.base import LocalFileDataset


class PngDataset(LocalFileDataset[bytes, bytes]):
    """An encoded PNG image, written atomically."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        write_bytes_atomic(self._filepath, data)


class TorchDataset(LocalFileDataset[dict[str, Any], dict[str, Any]]):
    """A dict of tensors and plain values (a checkpoint or a state dict).

    Loaded with ``weights_only=True``: a checkpoint from elsewhere cannot run
    code on load.
    """

    def load(self) -> dict[str, Any]:
        return torch.load(self._filepath, map_location="cpu", weights_only=True)

    def save(self, data: dict[str, Any]) -> None:
        with atomic_path(self._filepath) as tmp:
            torch.save(data, tmp)
