"""Kedro datasets for plain files: PNG bytes, matplotlib figures as PNGs,
trained model bundles, and a JSON record that may not exist yet."""

from __future__ import annotations

from matplotlib.figure import Figure

from ct_pipeline.atomic import atomic_path, write_bytes_atomic
from ct_pipeline.datasets.base import LocalFileDataset
from ct_pipeline.inference import ModelBundle


class PngDataset(LocalFileDataset[bytes, bytes]):
    """An encoded PNG image, written atomically."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        write_bytes_atomic(self._filepath, data)


class FigureDataset(LocalFileDataset[Figure, bytes]):
    """A matplotlib figure written atomically as a PNG at the figure's own
    resolution (its ``dpi``: the code that draws it knows how large it should
    be), as kedro-datasets' MatplotlibDataset writes the single figures; read
    back as the PNG's bytes (a figure cannot be rebuilt from its pixels). A
    ``PatientFolderDataset`` of these writes one lazily made figure per
    patient, one at a time."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: Figure) -> None:
        with atomic_path(self._filepath) as tmp:
            data.savefig(tmp, format="png", dpi="figure")


class ModelBundleDataset(LocalFileDataset[ModelBundle, ModelBundle]):
    """A trained model (``ct_pipeline.inference.ModelBundle``) in a ``.pt`` file.

    Written atomically; loaded with ``weights_only=True`` so a file from
    elsewhere cannot run code.
    """

    def load(self) -> ModelBundle:
        return ModelBundle.load(self._filepath)

    def save(self, data: ModelBundle) -> None:
        data.save(self._filepath)
