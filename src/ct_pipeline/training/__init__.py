"""Training: patient split, dataset, DDP worker loop, checkpoints, launch helpers."""

from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.loop import train_model
from ct_pipeline.training.split import split_patients
from ct_pipeline.training.worker import NonFiniteLossError, TrainResult

__all__ = [
    "NonFiniteLossError",
    "ReconstructionDataset",
    "TrainConfig",
    "TrainResult",
    "split_patients",
    "train_model",
]
