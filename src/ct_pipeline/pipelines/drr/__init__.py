"""The ``drr`` pipeline: ingest CTs (or make phantoms), preprocess, render DRRs;
and ``drr_merge``, which makes the parts of sharded runs one data set."""

from ct_pipeline.pipelines.drr.pipeline import create_merge_pipeline, create_pipeline

__all__ = ["create_merge_pipeline", "create_pipeline"]
