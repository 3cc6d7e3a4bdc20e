"""``kedro run --pipelines drr``: raw CTs or phantoms -> preprocessed cubes -> DRR sets."""

from kedro.pipeline import Pipeline, node, pipeline

from ct_pipeline.pipelines.drr.nodes import (
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
                    "current_source": "current_ct_source",
                    "params": "params:phantoms",
                },
                outputs="phantom_ct",
                name="make_phantoms",
                tags=["ingest"],
            ),
            node(
                preprocess_volumes,
                inputs={
                    "raw_ct": "raw_cts",
                    "phantom_ct": "phantom_ct",
                    "params": "params:preprocess",
                },
                outputs=["preprocessed_ct", "ct_source"],
                name="preprocess_volumes",
                tags=["ingest"],
            ),
            node(
                render_drr_sets,
                inputs={"preprocessed_ct": "preprocessed_ct", "params": "params:drr"},
                outputs="drr_sets",
                name="render_drr_sets",
                tags=["render"],
            ),
            node(
                make_drr_previews,
                inputs={"drr_sets": "drr_sets"},
                outputs="drr_previews",
                name="make_drr_previews",
                tags=["render", "reporting"],
            ),
        ]
    )
