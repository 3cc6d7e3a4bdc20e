"""The ``train`` pipeline: patient split and DDP training (evaluation is added by the registry)."""

from ct_pipeline.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
