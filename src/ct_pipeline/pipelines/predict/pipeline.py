"""``kedro run --pipelines predict``, and the inference pipeline logged to MLflow."""

from kedro.pipeline import Pipeline, node, pipeline

from ct_pipeline.pipelines.predict.nodes import (
    calibrate_radiographs,
    predict_volumes,
    prediction_figures,
    radiograph_figures,
    reconstruct_request,
    reconstruct_volumes,
    score_reprojections,
    select_patients,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return pipeline(
        [
            node(
                select_patients,
                inputs={
                    "drr_sets": "predict_drr_sets",
                    "best_model": "best_model",
                    "skip_model_patients": "params:predict.skip_model_patients",
                },
                outputs="predict_inputs",
                name="select_patients",
            ),
            node(
                predict_volumes,
                inputs={"drr_sets": "predict_inputs", "best_model": "best_model"},
                outputs="predictions",
                name="reconstruct_volumes",
                tags=["inference"],
            ),
            node(
                score_reprojections,
                inputs={
                    "volumes": "predictions",
                    "drr_sets": "predict_inputs",
                    "best_model": "best_model",
                },
                outputs="predict_reprojection",
                name="score_prediction_reprojections",
            ),
            node(
                prediction_figures,
                inputs={
                    "drr_sets": "predict_inputs",
                    "volumes": "predictions",
                    "best_model": "best_model",
                },
                outputs="prediction_figures",
                name="prediction_figures",
            ),
            node(
                calibrate_radiographs,
                inputs={
                    "radiographs": "predict_radiographs",
                    "best_model": "best_model",
                    "mu_water_per_mm": "params:drr.mu_water_per_mm",
                    "radiograph_params": "params:radiographs",
                },
                outputs="radiograph_views",
                name="calibrate_radiographs",
                tags=["inference"],
            ),
            node(
                reconstruct_volumes,
                inputs={"drr_sets": "radiograph_views", "best_model": "best_model"},
                outputs="radiograph_predictions",
                name="reconstruct_radiographs",
                tags=["inference"],
            ),
            node(
                score_reprojections,
                inputs={
                    "volumes": "radiograph_predictions",
                    "drr_sets": "radiograph_views",
                    "best_model": "best_model",
                },
                outputs="radiograph_reprojection",
                name="score_radiograph_reprojections",
            ),
            node(
                radiograph_figures,
                inputs={
                    "radiographs": "predict_radiographs",
                    "drr_sets": "radiograph_views",
                    "volumes": "radiograph_predictions",
                    "best_model": "best_model",
                },
                outputs="radiograph_figures",
                name="radiograph_figures",
            ),
        ]
    )


def create_inference_pipeline() -> Pipeline:
    """What ``mlflow.pyfunc.load_model(...).predict(drr_input)`` runs."""
    return pipeline(
        [
            node(
                reconstruct_request,
                inputs={"drr_input": "drr_input", "best_model": "best_model"},
                outputs="reconstruction",
                name="reconstruct_request",
                tags=["inference"],
            )
        ]
    )
