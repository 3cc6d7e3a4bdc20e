"""The ``drr`` pipeline: ingest CTs (or make phantoms), preprocess, render DRRs."""

from ct_pipeline.pipelines.drr.pipeline import create_pipeline

__all__ = ["create_pipeline"]
