"""benchmarks/bench_gpu.py: a clear no-op without CUDA, and its measurement runs (on the CPU)."""

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _bench().main(["--out", str(tmp_path / "gpu.md")]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "gpu.md").exists()


def test_the_measurement_runs_and_writes_its_table(tmp_path):
    out = tmp_path / "gpu.md"
    threads = torch.get_num_threads()
    try:
        code = _bench().main(
            ["--device", "cpu", "--models", "tiny", "--views", "2", "--batches", "1"]
            + ["--steps", "1", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1 and "| 2 | 1 | off |" in rows[0]
