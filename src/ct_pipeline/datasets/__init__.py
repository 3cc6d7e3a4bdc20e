"""Custom Kedro datasets: NIfTI volumes, raw CT folders, DRR sets, PNGs, torch
files, and the MLflow connectors (metric sink, run tags, figure folders)."""

from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.datasets.files import PngDataset, TorchDataset
from ct_pipeline.datasets.nifti import NiftiDataset, RawCTFolderDataset
from ct_pipeline.datasets.tracking import (
    MetricSinkDataset,
    MlflowFiguresDataset,
    MlflowRunsDataset,
    MlflowTagsDataset,
)

__all__ = [
    "DRRSetDataset",
    "MetricSinkDataset",
    "MlflowFiguresDataset",
    "MlflowRunsDataset",
    "MlflowTagsDataset",
    "NiftiDataset",
    "PngDataset",
    "RawCTFolderDataset",
    "TorchDataset",
]
