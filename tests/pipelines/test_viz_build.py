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


# Kedro's data layers, first to last (the folders 01_raw ... 08_reporting).
KEDRO_LAYERS = (
    "raw",
    "intermediate",
    "primary",
    "feature",
    "model_input",
    "models",
    "model_output",
    "reporting",
)


def _catalog_layers() -> dict[str, str]:
    import yaml

    from tiny_project import REPO_ROOT

    catalog = yaml.safe_load((REPO_ROOT / "conf/base/catalog.yml").read_text())
    return {
        name: entry["metadata"]["kedro-viz"]["layer"]
        for name, entry in catalog.items()
        if ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
    }


def _layer_inversions(pipeline, layers: dict[str, str]) -> list[str]:
    """Every layered dataset that feeds, directly or through unlayered
    datasets (memory, parameters), a layered dataset of an earlier layer."""
    consumers: dict[str, list] = {}
    for n in pipeline.nodes:
        for name in n.inputs:
            consumers.setdefault(name, []).append(n)

    def next_layered(name: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for n in consumers.get(name, []):
            for out in n.outputs:
                if out in layers:
                    found.add(out)
                elif out not in seen:
                    seen.add(out)
                    found |= next_layered(out, seen)
        return found

    rank = {layer: i for i, layer in enumerate(KEDRO_LAYERS)}
    return sorted(
        f"{source} ({layers[source]}) -> {target} ({layers[target]})"
        for source in pipeline.datasets()
        if source in layers
        for target in next_layered(source, set())
        if rank[layers[target]] < rank[layers[source]]
    )


def test_catalog_layers_are_kedro_layers():
    assert set(_catalog_layers().values()) <= set(KEDRO_LAYERS)


def test_no_dataset_feeds_an_earlier_layer():
    """Layers that only ever flow forward cannot form the cycle for which
    kedro-viz hides them all ("circular dependency detected")."""
    from ct_pipeline.pipeline_registry import register_pipelines

    layers = _catalog_layers()
    inversions = {
        name: found
        for name, pipeline in register_pipelines().items()
        if (found := _layer_inversions(pipeline, layers))
    }
    assert inversions == {}


@pytest.mark.slow
def test_viz_graph_shows_layers_of_every_pipeline():
    """The graph ``kedro viz build`` serves, built in-process from the
    repository's project: kedro-viz returns no layers when they form a cycle."""
    pytest.importorskip("kedro_viz")
    from kedro_viz.data_access.managers import DataAccessManager
    from kedro_viz.integrations.kedro.data_loader import load_data
    from kedro_viz.server import populate_data

    from tiny_project import REPO_ROOT

    catalog, pipelines, extras = load_data(REPO_ROOT)
    manager = DataAccessManager()
    populate_data(manager, catalog, pipelines, extras)
    layers = _catalog_layers()
    for name, pipeline in pipelines.items():
        used = {layers[d] for d in pipeline.datasets() if d in layers}
        shown = manager.get_sorted_layers_for_registered_pipeline(name)
        assert used <= set(shown), name
    # The whole job spans every layer in Kedro's order.
    shown = manager.get_sorted_layers_for_registered_pipeline("__default__")
    assert shown == [layer for layer in KEDRO_LAYERS if layer in shown]
