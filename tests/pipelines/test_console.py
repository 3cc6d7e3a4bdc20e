"""What a user sees in the terminal: `kedro run` prints no library warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_project import make_tiny_project


@pytest.mark.slow
def test_kedro_run_drr_prints_no_library_warnings(tmp_path):
    project = make_tiny_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    kedro = Path(sys.executable).with_name("kedro")
    done = subprocess.run(
        [str(kedro), "run", "--pipelines", "drr"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Completed 6 out of 6 tasks" in output
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings)
