"""A killed `kedro run` leaves no DDP worker training on as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ct_pipeline.training.checkpoint import find_resumable
from training_fixtures import make_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux"),
]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the field after the state is the parent pid
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return False
    return state.split()[0] != "Z"


# Two ranks training "for ever": the tests stop them.
ENDLESS = {"world_size": 2, "batch_size_per_device": 1, "epochs": 10_000}


def _endless_training_script(tmp_path: Path) -> Path:
    """A script that trains with ENDLESS, checkpoints under ``tmp_path / "ckpt"``."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parents[1])!r})
            from training_fixtures import make_config, make_patients
            from ct_pipeline.training import train_model

            if __name__ == "__main__":  # spawned ranks re-import this file
                volumes, drr_sets = make_patients(8)
                split = {{"train": sorted(volumes)[:6], "val": sorted(volumes)[6:]}}
                config = make_config({str(tmp_path / "ckpt")!r}, **{ENDLESS!r})
                train_model(volumes, drr_sets, split, config)
            """
        )
    )
    return script


def _ranks(parent_pid: int) -> list[int]:
    """The DDP ranks among ``parent_pid``'s children (the spawn start method
    also starts a resource tracker, which is not a rank)."""
    return [
        pid
        for pid in _children(parent_pid)
        if b"spawn_main" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    ]


def test_workers_die_with_their_parent(tmp_path):
    """Issue: after kill -9 of the parent, both ranks trained on to the last epoch."""
    script = _endless_training_script(tmp_path)
    # Started as a shell's background job, as `kedro run &` would be (the
    # situation where orphans were seen; a direct child of this test happened
    # to take its workers down with it).
    launcher = subprocess.run(
        ["bash", "-c", f"{sys.executable} {script} > /dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    parent_pid = int(launcher.stdout.strip())
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline:
            workers = _ranks(parent_pid)
            if len(workers) == 2 and (tmp_path / "ckpt").exists():
                break
            time.sleep(0.5)
        assert len(workers) == 2, "the two ranks never started training"
        os.kill(parent_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "a rank outlived its parent"
    finally:
        for pid in [parent_pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _checkpoints(folder: Path) -> list[Path]:
    """The run folders' last.pt, not a writer's abandoned temporary copy in a
    hidden staging folder (a rank killed mid-write leaves one there)."""
    return [p for p in folder.glob("*/last.pt") if not p.parent.name.startswith(".")]


def test_sigterm_stops_the_run_cleanly_and_leaves_it_resumable(tmp_path):
    """Issue: SIGTERM must stop training cleanly, leaving a resumable last.pt."""
    script = _endless_training_script(tmp_path)
    # A file, not a pipe: the progress bars would fill an unread pipe and block.
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:  # the child keeps its own copy of the handle
        parent = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _checkpoints(tmp_path / "ckpt"):
            time.sleep(0.5)
        assert _checkpoints(tmp_path / "ckpt"), (
            "no epoch finished: " + log.read_text()[-2000:]
        )
        workers = _ranks(parent.pid)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        assert parent.returncode != 0
        assert "training stopped by SIGTERM" in log.read_text()
        assert workers and not any(_alive(p) for p in workers)
    finally:
        for pid in [parent.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    (last,) = _checkpoints(tmp_path / "ckpt")
    config = make_config(tmp_path / "ckpt", **ENDLESS)
    checkpoint = find_resumable(last.parent, config)
    assert checkpoint is not None and checkpoint["epoch"] >= 1
