"""The one atomic writer: all or nothing, no stray files where datasets look, umask respected."""

from __future__ import annotations

import os
import stat

import pytest

from ct_pipeline.atomic import atomic_path, write_bytes_atomic


def test_an_interrupted_write_keeps_the_old_file_and_leaves_nothing_in_the_folder(
    tmp_path,
):
    """Issue: an interrupted write left a hidden `.x.npz.*.npz` that a dataset
    listing `*.npz` read as a patient."""
    folder = tmp_path / "drr"
    write_bytes_atomic(folder / "p1.npz", b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(folder / "p1.npz") as tmp:
        tmp.write_bytes(b"half")
        assert tmp.parent.parent.parent == tmp_path  # staged outside the folder
        raise KeyboardInterrupt
    assert (folder / "p1.npz").read_bytes() == b"old"
    assert sorted(p.name for p in folder.rglob("*")) == ["p1.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drr"]  # staging removed


def test_written_files_follow_the_umask(tmp_path):
    """Issue: files came out 0600 whatever the umask."""
    previous = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
