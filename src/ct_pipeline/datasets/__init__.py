"""Custom Kedro datasets: NIfTI volumes, raw CT folders, DRR sets, PNGs, torch files."""

from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.datasets.files import PngDataset, TorchDataset
from ct_pipeline.datasets.nifti import NiftiDataset, RawCTFolderDataset

__all__ = ["DRRSetDataset", "NiftiDataset", "PngDataset", "RawCTFolderDataset", "TorchDataset"]
