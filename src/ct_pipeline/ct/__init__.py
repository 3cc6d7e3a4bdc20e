"""CT volume I/O and preprocessing."""

from ct_pipeline.ct.errors import CTInputError
from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.io import load_ct, save_ct
from ct_pipeline.ct.preprocess import preprocess_ct
from ct_pipeline.ct.volume import CTVolume

__all__ = [
    "CTInputError",
    "CTVolume",
    "CubeGrid",
    "load_ct",
    "preprocess_ct",
    "save_ct",
]
