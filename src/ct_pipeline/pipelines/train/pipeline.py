"""``kedro run --pipelines train`` (with evaluation appended in the registry)."""

from kedro.pipeline import Pipeline, node, pipeline

from ct_pipeline.pipelines.train.nodes import split_dataset, train_reconstructor


def create_pipeline(**kwargs: object) -> Pipeline:
    return pipeline(
        [
            node(
                split_dataset,
                inputs={"preprocessed_ct": "preprocessed_ct", "params": "params:split"},
                outputs="patient_split",
                name="split_dataset",
                tags=["split"],
            ),
            node(
                train_reconstructor,
                inputs={
                    "preprocessed_ct": "preprocessed_ct",
                    "drr_sets": "drr_sets",
                    "patient_split": "patient_split",
                    "params": "params:train",
                    "metric_sink": "training_metric_sink",
                    "ct_source": "ct_source",
                    "refinement": "params:refinement",
                },
                outputs=["best_model", "training_history"],
                name="train_reconstructor",
                tags=["training"],
            ),
        ]
    )
