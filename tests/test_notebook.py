"""notebooks/explore.ipynb runs top to bottom against the tiny project's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_against_the_tiny_project(tiny_project, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    # The kernel inherits this process's environment when it starts.
    monkeypatch.setenv("CT_PIPELINE_PROJECT", str(tiny_project.path))
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    # One torch thread: two would crawl on the shared cores (see conftest.run_kedro).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # The DRR preview strip and the slices figure.
    assert len(images) == 2
    text = "".join(out.get("text", "") for out in outputs)
    assert f"project: {tiny_project.path}" in text
    assert "same grid as the ground truth: True" in text
    (table,) = [
        out["data"]["text/plain"]
        for out in notebook.cells[-1].outputs
        if out["output_type"] == "execute_result"
    ]
    assert "psnr_3d" in table and "mae_hu" in table
