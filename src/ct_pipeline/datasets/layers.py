"""The layers of one data set: stamped with its id, staged and committed together.

A ``drr`` run writes several layers (cubes, DRR sets, previews, the manifest).
The run's hook (``ct_pipeline.hooks.LayerGuardHook``) has each of these
datasets ``join`` one ``LayerCommit``: saves go to staging paths, loads in the
same run read them back, and the hook swaps them all in when the run succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import DatasetError

from ct_pipeline.atomic import atomic_path
from ct_pipeline.commit import LayerCommit, read_stamp
from ct_pipeline.datasets.base import LocalFileDataset


@dataclass(frozen=True)
class Stored:
    """A loader of one patient's value, with the files it reads.

    Saving it into a folder of the same kind links the file instead of
    decoding and re-encoding it (an unchanged patient's file is carried into
    the new data set byte for byte), and the manifest fingerprints its files.
    """

    files: tuple[Path, ...]
    read: Callable[[], Any]

    def __call__(self) -> Any:
        return self.read()


class PatientLayer(dict[str, Any]):
    """A layer's patients (id -> value or loader), the data set they belong
    to, and how many worker processes may compute its loaders when it is saved."""

    def __init__(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        *,
        dataset_id: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(items)
        self.dataset_id = dataset_id
        self.workers = workers


def layer_id(layer: Mapping[str, Any]) -> str | None:
    """The data-set id of a loaded layer (None: written without a manifest)."""
    return getattr(layer, "dataset_id", None)


def layer_workers(layer: Mapping[str, Any]) -> int:
    """How many processes may compute the layer's loaders (1: this one)."""
    return int(getattr(layer, "workers", 1))


def part_path(layer: Path, part: str) -> Path:
    """Where part ``part`` (a shard's, "3-of-16") of ``layer`` lives: folder
    ``ct`` -> ``ct.parts/3-of-16``, file ``ct_source.json`` ->
    ``ct_source.parts/3-of-16.json``; beside the layer, never inside it."""
    return layer.parent / f"{layer.stem}.parts" / f"{part}{layer.suffix}"


class StagedLayer:
    """A dataset whose layer a ``LayerCommit`` can stage (see the module doc),
    or whose part a sharded run writes instead of the layer (``write_part``)."""

    _commit: LayerCommit | None = None
    _part: str | None = None

    @property
    def layer_path(self) -> Path:
        raise NotImplementedError

    @property
    def target_path(self) -> Path:
        """What this run reads and writes: the layer, or its part."""
        if self._part is None:
            return self.layer_path
        return part_path(self.layer_path, self._part)

    def join(self, commit: LayerCommit) -> None:
        self._commit = commit

    def write_part(self, part: str) -> None:
        """Read and write part ``part`` of the layer instead of the layer."""
        self._part = part

    def parts(self) -> list[str]:
        """The names of the layer's parts on disk (staging and lock files are hidden)."""
        folder = part_path(self.layer_path, "_").parent
        suffix = self.layer_path.suffix
        if not folder.is_dir():
            return []
        return sorted(
            entry.name[: len(entry.name) - len(suffix)]
            for entry in folder.iterdir()
            if not entry.name.startswith(".") and entry.name.endswith(suffix)
        )

    def _read_path(self) -> Path:
        """This run's staged version of the layer if it wrote one, else the layer."""
        target = self.target_path
        staged = self._commit.staged(target) if self._commit else None
        return staged or target

    def _stamp(self) -> str | None:
        return read_stamp(self._read_path())


class ManifestDataset(StagedLayer, LocalFileDataset[Mapping[str, Any], dict[str, Any]]):
    """The data set's manifest, a JSON file: the commit record of its layers.

    Loads ``{}`` when there is none yet (the first run of a project).
    """

    @property
    def layer_path(self) -> Path:
        return self._filepath

    def load(self) -> dict[str, Any]:
        path = self._read_path()
        if not path.is_file():
            return {}
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DatasetError(
                f"cannot read the data-set manifest {path}: {error}; rerun "
                "`kedro run --pipelines drr`"
            ) from error
        return dict(manifest)

    def save(self, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True)
        if self._commit is None:
            with atomic_path(self.target_path) as tmp:
                tmp.write_text(text)
            return
        staged = self._commit.staging_path(self.target_path)
        with atomic_path(staged) as tmp:
            tmp.write_text(text)
