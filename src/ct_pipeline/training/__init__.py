"""Training: patient split, dataset, the per-rank loop, DDP processes, checkpoints."""

from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.data import ReconstructionDataset
from ct_pipeline.training.job import NonFiniteLossError, TrainResult
from ct_pipeline.training.launch import TrainingStopped, train_model
from ct_pipeline.training.split import split_patients

__all__ = [
    "NonFiniteLossError",
    "ReconstructionDataset",
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "split_patients",
    "train_model",
]
