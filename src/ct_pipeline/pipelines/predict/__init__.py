"""The ``predict`` pipeline: reconstruct volumes from DRR sets without ground truth."""

from ct_pipeline.pipelines.predict.pipeline import (
    create_inference_pipeline,
    create_pipeline,
)

__all__ = ["create_inference_pipeline", "create_pipeline"]
