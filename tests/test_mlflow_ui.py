"""`kedro mlflow ui` answers on its port from a PATH that lacks the virtual environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import ct_pipeline
from tiny_project import make_tiny_project


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_the_ui_starts_without_the_environment_on_path(tmp_path):
    """Issue: kedro-mlflow starts a bare `mlflow`, FileNotFoundError off PATH."""
    project = make_tiny_project(tmp_path / "project")
    kedro = Path(sys.executable).parent / "kedro"
    port = _free_port()
    env = dict(
        os.environ,
        PATH="/usr/bin:/bin",
        # The package under test, also when it is not the installed one.
        PYTHONPATH=str(Path(ct_pipeline.__file__).parents[1]),
        KEDRO_DISABLE_TELEMETRY="1",
    )
    ui = subprocess.Popen(
        [str(kedro), "mlflow", "ui", "--env", "local", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the UI's server workers die with the group
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert ui.poll() is None, ui.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/", timeout=2
                ) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the UI did not answer in 120 s"
                time.sleep(1)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)
            ui.wait(timeout=30)
