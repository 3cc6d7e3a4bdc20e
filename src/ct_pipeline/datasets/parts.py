"""The parts of a layer that sharded ``drr`` runs wrote, read for their merge."""

from __future__ import annotations

from typing import Any, cast

from kedro.io import AbstractDataset, DatasetError

from ct_pipeline.datasets.layers import StagedLayer


class LayerPartsDataset(AbstractDataset[None, dict[str, Any]]):
    """Every part of the layer ``layer`` (that layer's dataset config, as in
    the catalogue): part name ("3-of-16") -> the part, loaded as the layer
    would be. Read only: parts are written by sharded runs of the layer's
    own dataset."""

    def __init__(self, layer: dict[str, Any], metadata: dict[str, Any] | None = None):
        self._layer = dict(layer)
        self.metadata = metadata

    def _layer_dataset(self, part: str | None = None) -> AbstractDataset[Any, Any]:
        dataset = AbstractDataset.from_config("layer", dict(self._layer))
        if not isinstance(dataset, StagedLayer):
            raise DatasetError(f"{self._layer.get('type')} is not a layer with parts")
        if part is not None:
            dataset.write_part(part)
        return dataset

    def load(self) -> dict[str, Any]:
        names = cast(StagedLayer, self._layer_dataset()).parts()
        return {part: self._layer_dataset(part).load() for part in names}

    def save(self, data: None) -> None:
        raise DatasetError("layer parts are written by sharded runs, never saved")

    def _describe(self) -> dict[str, Any]:
        return {"layer": self._layer}
