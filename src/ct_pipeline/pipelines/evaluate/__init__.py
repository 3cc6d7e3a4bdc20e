"""The ``evaluate`` pipeline: test-split metrics, baselines and pictures into MLflow."""

from ct_pipeline.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
