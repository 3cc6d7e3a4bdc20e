"""Custom Kedro datasets: folders of CT volumes, DRR sets, radiographs, PNGs
and figures, model bundles, an optional JSON record, and the MLflow
connectors (metric sink, run tags, figure folders)."""

from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.datasets.files import (
    FigureDataset,
    ModelBundleDataset,
    PngDataset,
)
from ct_pipeline.datasets.folder import PatientFolderDataset
from ct_pipeline.datasets.layers import ManifestDataset
from ct_pipeline.datasets.nifti import CTFolderDataset
from ct_pipeline.datasets.parts import LayerPartsDataset
from ct_pipeline.datasets.radiographs import RadiographFolderDataset
from ct_pipeline.datasets.tracking import (
    MetricSinkDataset,
    MlflowFiguresDataset,
    MlflowRunsDataset,
    MlflowTagsDataset,
)

__all__ = [
    "DRRSetDataset",
    "FigureDataset",
    "MetricSinkDataset",
    "MlflowFiguresDataset",
    "MlflowRunsDataset",
    "MlflowTagsDataset",
    "LayerPartsDataset",
    "ManifestDataset",
    "ModelBundleDataset",
    "PatientFolderDataset",
    "PngDataset",
    "RadiographFolderDataset",
    "CTFolderDataset",
]
