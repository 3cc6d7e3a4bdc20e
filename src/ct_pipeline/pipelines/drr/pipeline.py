"""``kedro run --pipelines drr``: raw CTs or phantoms -> preprocessed cubes -> DRR sets.

The ``previous_*`` inputs are the same files as the outputs, read before this
run replaces them: a patient whose fingerprint did not change keeps its files.
"""

from kedro.pipeline import Pipeline, node, pipeline

from ct_pipeline.pipelines.drr.merge import merge_shards
from ct_pipeline.pipelines.drr.nodes import (
    describe_dataset,
    make_drr_previews,
    make_phantoms,
    preprocess_volumes,
    read_raw_cts,
    render_drr_sets,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return pipeline(
        [
            node(
                read_raw_cts,
                inputs={"raw_ct": "raw_ct", "params": "params:raw"},
                outputs="raw_cts",
                name="read_raw_cts",
                tags=["ingest"],
            ),
            node(
                make_phantoms,
                inputs={
                    "raw_ct": "raw_cts",
                    "current_source": "previous_ct_source",
                    "params": "params:phantoms",
                    "shard": "params:drr.shard",
                    "workers": "params:drr.workers",
                },
                outputs="phantom_ct",
                name="make_phantoms",
                tags=["ingest"],
            ),
            node(
                describe_dataset,
                inputs={
                    "raw_ct": "raw_cts",
                    "phantom_ct": "phantom_ct",
                    "previous": "previous_ct_source",
                    "phantoms": "params:phantoms",
                    "preprocess": "params:preprocess",
                    "drr": "params:drr",
                },
                outputs="ct_source",
                name="describe_dataset",
                tags=["ingest"],
            ),
            node(
                preprocess_volumes,
                inputs={
                    "raw_ct": "raw_cts",
                    "phantom_ct": "phantom_ct",
                    "params": "params:preprocess",
                    "manifest": "ct_source",
                    "previous": "previous_preprocessed_ct",
                    "previous_manifest": "previous_ct_source",
                    "workers": "params:drr.workers",
                },
                outputs="preprocessed_ct",
                name="preprocess_volumes",
                tags=["ingest"],
            ),
            node(
                render_drr_sets,
                inputs={
                    "preprocessed_ct": "preprocessed_ct",
                    "raw_ct": "raw_cts",
                    "phantom_ct": "phantom_ct",
                    "params": "params:drr",
                    "manifest": "ct_source",
                    "previous": "previous_drr_sets",
                    "previous_manifest": "previous_ct_source",
                },
                outputs="drr_sets",
                name="render_drr_sets",
                tags=["render"],
            ),
            node(
                make_drr_previews,
                inputs={
                    "drr_sets": "drr_sets",
                    "manifest": "ct_source",
                    "previous": "previous_drr_previews",
                    "previous_manifest": "previous_ct_source",
                    "workers": "params:drr.workers",
                },
                outputs="drr_previews",
                name="make_drr_previews",
                tags=["render", "reporting"],
            ),
        ]
    )


def create_merge_pipeline(**kwargs: object) -> Pipeline:
    """``kedro run --pipelines drr_merge``: the parts of sharded ``drr`` runs
    (``drr.shard`` i/n) checked and committed as the data set (see merge.py)."""
    return pipeline(
        [
            node(
                merge_shards,
                inputs={
                    "manifest_parts": "ct_source_parts",
                    "phantom_parts": "phantom_ct_parts",
                    "cube_parts": "preprocessed_ct_parts",
                    "view_parts": "drr_sets_parts",
                    "preview_parts": "drr_previews_parts",
                    "previous": "previous_ct_source",
                },
                outputs=[
                    "ct_source",
                    "phantom_ct",
                    "preprocessed_ct",
                    "drr_sets",
                    "drr_previews",
                ],
                name="merge_shards",
                tags=["merge"],
            )
        ]
    )
