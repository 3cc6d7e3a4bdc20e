"""Kedro datasets for plain files: PNG bytes and torch state dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

from ct_pipeline.atomic import atomic_path, write_bytes_atomic


class PngDataset(AbstractDataset[bytes, bytes]):
    """An encoded PNG image, written atomically."""

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        write_bytes_atomic(self._filepath, data)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class TorchDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A dict of tensors and plain values (a checkpoint or a state dict).

    Loaded with ``weights_only=True``: a checkpoint from elsewhere cannot run
    code on load.
    """

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def load(self) -> dict[str, Any]:
        return torch.load(self._filepath, map_location="cpu", weights_only=True)

    def save(self, data: dict[str, Any]) -> None:
        with atomic_path(self._filepath) as tmp:
            torch.save(data, tmp)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
