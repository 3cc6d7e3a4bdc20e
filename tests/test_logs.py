"""Logs redirected to a file are plain lines: no redrawn bars, no 80-column wrapping."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import ct_pipeline
from ct_pipeline.logs import for_a_terminal
from tiny_project import REPO_ROOT

# What a training prints: a bar redrawn on every step (tqdm's mininterval set
# to 0 so that each step would draw), then a long epoch line.
EPOCH_LINE = "epoch 1/1" + " train/loss 0.1234" * 12
SCRIPT = f"""
import logging, sys, time
import kedro.framework.project  # reads conf/logging.yml from the working folder
import ct_pipeline.settings
from ct_pipeline.progress import progress
for _ in progress(range(40), desc="training", mininterval=0):
    time.sleep(0.002)
logging.getLogger("ct_pipeline.training").info({EPOCH_LINE!r})
print(type(logging.getLogger().handlers[0]).__name__)
"""


def _start(stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(ct_pipeline.__file__).parents[1]))
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
    )


@pytest.mark.slow  # a Python process importing Kedro
def test_a_run_redirected_to_a_file_logs_one_plain_line_per_record(tmp_path):
    """Issue: `make run > log.txt` gave thousands of redrawn bar lines and
    epoch lines wrapped over three 80-column lines."""
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        assert _start(out.fileno(), subprocess.STDOUT).wait(timeout=120) == 0
    text = log.read_text()
    assert "\r" not in text, "a progress bar was drawn into the file"
    lines = text.splitlines()
    epoch = [line for line in lines if "epoch 1/1" in line]
    assert len(epoch) == 1 and epoch[0].endswith(EPOCH_LINE), lines
    assert lines[-1] == "StreamHandler"
    # Kedro's "Using 'conf/logging.yml' ..." line, the epoch line, the handler.
    assert len(lines) == 3, lines


@pytest.mark.slow  # a Python process importing Kedro
def test_a_terminal_gets_rich_and_the_bar():
    parent, child = pty.openpty()
    # A 120 x 24 terminal: a new pty has no size, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    output = b""
    try:
        script = _start(child, child)
        os.close(child)
        while True:  # read as it comes: a full terminal buffer would block the script
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # the terminal's other end closed: all read
                break
            if not chunk:
                break
            output += chunk
        assert script.wait(timeout=120) == 0, output.decode()
    finally:
        os.close(parent)
    text = output.decode()
    assert "RichHandler" in text
    assert re.search(r"training.*\r(?!\n)", text), "no bar redrawn in place"


def test_only_a_config_with_both_handlers_changes():
    config = {
        "handlers": {"plain": {}, "rich": {}},
        "root": {"handlers": ["plain"]},
        "loggers": {"kedro": {"level": "INFO"}, "x": {"handlers": ["plain", "f"]}},
    }
    changed = for_a_terminal(config)
    assert changed["root"]["handlers"] == ["rich"]
    assert changed["loggers"]["x"]["handlers"] == ["rich", "f"]
    assert config["root"]["handlers"] == ["plain"]  # the original is left alone
    other = {"handlers": {"console": {}}, "root": {"handlers": ["console"]}}
    assert for_a_terminal(other) is other
