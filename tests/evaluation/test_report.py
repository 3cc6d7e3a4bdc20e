"""Per-patient tables and their summary."""

from __future__ import annotations

import pytest

from ct_pipeline.evaluation.report import per_patient_table, summary


def test_table_rows_are_sorted_patients_and_columns_keep_metric_order() -> None:
    table = per_patient_table(
        {
            "p2": {"psnr_3d": 30.0, "ssim_3d": 0.9},
            "p1": {"ssim_3d": 0.7, "psnr_3d": 20},
        }
    )
    assert table.index.name == "patient_id"
    assert list(table.index) == ["p1", "p2"]
    assert list(table.columns) == ["psnr_3d", "ssim_3d"]
    assert table.loc["p1", "psnr_3d"] == 20.0


def test_summary_means_with_prefixed_names() -> None:
    table = per_patient_table(
        {
            "a": {"psnr_3d": 20.0, "mae_hu": 100.0},
            "b": {"psnr_3d": 26.0, "mae_hu": 50.0},
        }
    )
    assert summary(table) == {"test/psnr_3d": 23.0, "test/mae_hu": 75.0}
    assert summary(table, prefix="baseline_mean") == {
        "baseline_mean/psnr_3d": 23.0,
        "baseline_mean/mae_hu": 75.0,
    }


def test_table_rejects_empty_input_and_missing_metrics() -> None:
    with pytest.raises(ValueError, match="at least one patient"):
        per_patient_table({})
    with pytest.raises(ValueError, match="patient 'b' has metrics"):
        per_patient_table(
            {"a": {"psnr_3d": 1.0, "ssim_3d": 1.0}, "b": {"psnr_3d": 1.0}}
        )
