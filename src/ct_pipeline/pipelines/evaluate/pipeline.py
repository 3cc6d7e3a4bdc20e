"""``kedro run --pipelines evaluate``: score the best model on the test split."""

from kedro.pipeline import Pipeline, node, pipeline

from ct_pipeline.pipelines.evaluate.nodes import (
    describe_run,
    plot_attention_maps,
    plot_drr_previews,
    plot_reconstructions,
    plot_training_curves,
    reconstruct_test_set,
    score_real_ct,
    score_test_set,
    summarise_metrics,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return pipeline(
        [
            node(
                reconstruct_test_set,
                inputs={
                    "drr_sets": "drr_sets",
                    "best_model": "best_model",
                    "patient_split": "patient_split",
                    "preprocessed_ct": "preprocessed_ct",
                },
                outputs="test_reconstructions",
                name="reconstruct_test_set",
                tags=["evaluation"],
            ),
            node(
                score_test_set,
                inputs={
                    "reconstructions": "test_reconstructions",
                    "preprocessed_ct": "preprocessed_ct",
                    "patient_split": "patient_split",
                    "best_model": "best_model",
                },
                outputs="test_metrics_table",
                name="score_test_set",
                tags=["evaluation"],
            ),
            node(
                summarise_metrics,
                inputs={
                    "test_metrics_table": "test_metrics_table",
                    "best_model": "best_model",
                    "unet_runs": "unet_baseline_runs",
                },
                outputs=["test_metrics", "method_comparison"],
                name="summarise_metrics",
                tags=["evaluation"],
            ),
            node(
                plot_reconstructions,
                inputs={
                    "reconstructions": "test_reconstructions",
                    "preprocessed_ct": "preprocessed_ct",
                    "drr_sets": "drr_sets",
                    "best_model": "best_model",
                    "params": "params:evaluate",
                },
                outputs=["reconstruction_figures", "headline_figure"],
                name="plot_reconstructions",
                tags=["evaluation", "reporting"],
            ),
            node(
                plot_drr_previews,
                inputs={
                    "drr_sets": "drr_sets",
                    "patient_split": "patient_split",
                    "params": "params:evaluate",
                },
                outputs="drr_preview_figure",
                name="plot_drr_previews",
                tags=["evaluation", "reporting"],
            ),
            node(
                plot_training_curves,
                inputs={
                    "training_history": "training_history",
                    "best_model": "best_model",
                },
                outputs="training_curves",
                name="plot_training_curves",
                tags=["evaluation", "reporting"],
            ),
            node(
                plot_attention_maps,
                inputs={
                    "drr_sets": "drr_sets",
                    "preprocessed_ct": "preprocessed_ct",
                    "best_model": "best_model",
                    "patient_split": "patient_split",
                },
                outputs="attention_figure",
                name="plot_attention_maps",
                tags=["evaluation", "reporting"],
            ),
            node(
                score_real_ct,
                inputs={
                    "best_model": "best_model",
                    "drr_sets": "drr_sets",
                    "params": "params:evaluate",
                },
                outputs=["real_ct_metrics", "real_ct_figure"],
                name="score_real_ct",
                tags=["evaluation"],
            ),
            node(
                describe_run,
                inputs={"best_model": "best_model", "ct_source": "ct_source"},
                outputs="run_tags",
                name="describe_run",
                tags=["evaluation"],
            ),
        ]
    )
