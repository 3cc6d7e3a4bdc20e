"""What every single-file dataset of the project shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar

from kedro.io import AbstractDataset

In = TypeVar("In")
Out = TypeVar("Out")


class LocalFileDataset(AbstractDataset[In, Out], Generic[In, Out]):
    """One local file at ``filepath``; ``metadata`` is kept for kedro-viz and plugins."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
