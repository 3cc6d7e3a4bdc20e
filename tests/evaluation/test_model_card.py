"""The model card: every value from the run it describes, and its warnings."""

from __future__ import annotations

from ct_pipeline.evaluation.model_card import model_card

PARAMS = {
    "data.source": "raw",
    "data.volume_size": "128",
    "data.spacing_mm": "3.0",
    "data.geometry.beam": "cone",
    "data.geometry.sad_mm": "1000.0",
    "data.geometry.sdd_mm": "1500.0",
    "data.geometry.detector_px": "[256, 256]",
    "data.geometry.pixel_mm": "1.5",
    "data.patients.train": "28",
    "data.patients.val": "4",
    "data.patients.test": "8",
    "train.num_views": "2",
}
TAGS = {
    "mlflow.runName": "small-2v",
    "ct_pipeline.num_views": "2",
    "ct_pipeline.angles_deg": "0,90",
}
METRICS = {
    "test/psnr_3d": 32.671,
    "test/ssim_3d": 0.9012,
    "test/mae_hu": 41.2,
    "baseline_mean/psnr_3d": 21.5,
    "best/epoch": 37.0,
    "best/val_psnr_3d": 32.9,
}


def test_card_states_the_runs_views_geometry_data_and_scores():
    card = model_card(PARAMS, METRICS, TAGS)
    assert card.startswith("# Model card: small-2v\n")
    assert "2 views at 0,90 degrees" in card
    assert "source to detector 1500 mm" in card and "256 x 256 pixels of 1.5 mm" in card
    assert "128^3 voxels of 3 mm" in card
    assert "CT volumes placed in `data/01_raw`" in card
    assert "28 train, 4 val, 8 test" in card
    assert "| the test patients (never seen in training) | 32.67 | 0.901 | 41 |" in card
    assert "epoch 37" in card
    # Rows are only those the run measured: no real CT here.
    assert "real chest CT" not in card
    assert "other scanners, patients or anatomy may score lower" in card
    assert "not for clinical use" in card


def test_card_falls_back_to_the_configured_views():
    card = model_card(PARAMS | {"train.num_views": "8"}, METRICS, {})
    assert "8 views;" in card
