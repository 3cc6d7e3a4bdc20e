"""Shared fixtures: the tiny project (tests/tiny_project.py), run end to end
once per session; and the `slow` mark, given to every end-to-end test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tiny_project import TinyProject, make_tiny_project
from training_fixtures import one_torch_thread

# Fixtures that start a Kedro project or spawn training ranks: every test
# that uses one is end to end, so `make test-fast` (-m "not slow") skips it
# without each test having to say so.
END_TO_END_FIXTURES = frozenset(
    {"tiny_project", "fresh_tiny_project", "ddp_and_single"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: the machine's two cores are shared
    by the whole suite, and the in-process runs take one."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """The tiny project after ``kedro run`` (the __default__ pipeline: drr + train).

    ``leaked_runs`` counts the MLflow runs that run left active in the process.
    """
    project = TinyProject(
        make_tiny_project(tmp_path_factory.mktemp("tiny") / "project")
    )
    # The tiny run lasts a few seconds; sampled at the project's interval
    # (5 s) it may end before its first system-metrics sample.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ct_pipeline.hooks.SYSTEM_METRICS_INTERVAL_S", 1.0)
        project.leaked_runs = project.run()
    return project


@pytest.fixture
def fresh_tiny_project(tmp_path: Path) -> TinyProject:
    """A tiny project that has not run yet (for tests that change its raw data)."""
    return TinyProject(make_tiny_project(tmp_path / "project"))
