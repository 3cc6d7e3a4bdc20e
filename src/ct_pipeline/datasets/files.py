"""Kedro datasets for plain files: PNG bytes and torch state dicts."""

from __future__ import annotations

from typing import Any

from ct_pipeline.atomic import write_bytes_atomic
from ct_pipeline.datasets.base import LocalFileDataset
from ct_pipeline.training.checkpoint import load_checkpoint, save_checkpoint


class PngDataset(LocalFileDataset[bytes, bytes]):
    """An encoded PNG image, written atomically."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        write_bytes_atomic(self._filepath, data)


class TorchDataset(LocalFileDataset[dict[str, Any], dict[str, Any]]):
    """A dict of tensors and plain values (a checkpoint or a state dict).

    Read and written exactly like training checkpoints: atomically, and loaded
    with ``weights_only=True`` so a file from elsewhere cannot run code.
    """

    def load(self) -> dict[str, Any]:
        return load_checkpoint(self._filepath)

    def save(self, data: dict[str, Any]) -> None:
        save_checkpoint(self._filepath, data)
