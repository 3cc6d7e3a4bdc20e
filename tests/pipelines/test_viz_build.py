"""``kedro viz build`` on the tiny project: a static site that shows every pipeline.

The build needs no network (unlike ``kedro viz run``, which asks PyPI for the
latest kedro-viz version). It reports failure only in its output and still exits
0, so the test reads the files it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ("drr", "train", "evaluate", "predict")


def test_viz_build_writes_every_pipeline(tiny_project):
    pytest.importorskip("kedro_viz")
    from ct_pipeline.pipeline_registry import register_pipelines

    kedro = Path(sys.executable).with_name("kedro")
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(kedro), "viz", "build"],
        cwd=tiny_project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Success" in output and "Failed" not in output, output

    build = tiny_project.path / "build"
    assert (build / "index.html").is_file()
    main = json.loads((build / "api/main").read_text())
    assert set(STAGES) <= {p["id"] for p in main["pipelines"]}

    registered = register_pipelines()
    for stage in STAGES:
        shown = json.loads((build / "api/pipelines" / stage).read_text())
        assert shown["selected_pipeline"] == stage
        tasks = {n["name"] for n in shown["nodes"] if n["type"] == "task"}
        assert tasks == {n.name for n in registered[stage].nodes}, stage


def test_every_catalogued_dataset_has_a_layer():
    """kedro viz groups datasets by layer; one without floats outside them."""
    import yaml

    from tiny_project import REPO_ROOT

    catalog = yaml.safe_load((REPO_ROOT / "conf/base/catalog.yml").read_text())
    missing = [
        name
        for name, entry in catalog.items()
        if not ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
    ]
    assert missing == []
