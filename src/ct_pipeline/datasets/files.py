"""Kedro datasets for plain files: PNG bytes, trained model bundles, and a
JSON record that may not exist yet."""

from __future__ import annotations

from ct_pipeline.atomic import write_bytes_atomic
from ct_pipeline.datasets.base import LocalFileDataset
from ct_pipeline.inference import ModelBundle


class PngDataset(LocalFileDataset[bytes, bytes]):
    """An encoded PNG image, written atomically."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        write_bytes_atomic(self._filepath, data)


class ModelBundleDataset(LocalFileDataset[ModelBundle, ModelBundle]):
    """A trained model (``ct_pipeline.inference.ModelBundle``) in a ``.pt`` file.

    Written atomically; loaded with ``weights_only=True`` so a file from
    elsewhere cannot run code.
    """

    def load(self) -> ModelBundle:
        return ModelBundle.load(self._filepath)

    def save(self, data: ModelBundle) -> None:
        data.save(self._filepath)
