"""The torchrun path: same worker, process group from the environment (env://)."""

import pytest
import torch

from ct_pipeline.pipelines.torchrun import main, run_under_torchrun
from ct_pipeline.training.loop import free_port
from training_fixtures import make_config, make_patients


def test_torchrun_worker_trains_from_the_environment(tmp_path, monkeypatch):
    volumes, drr_sets = make_patients(3)
    split = {"train": ["patient_00", "patient_01"], "val": ["patient_02"], "test": []}
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    try:
        config = make_config(tmp_path, epochs=1, batch_size_per_device=2, world_size=4)
        result = run_under_torchrun(volumes, drr_sets, split, config)
    finally:
        torch.set_num_threads(threads)
    assert result is not None and [h["epoch"] for h in result.history] == [1]
    assert result.checkpoint_paths["best"].exists()
    assert not torch.distributed.is_initialized()  # the group is torn down


def test_cli_documents_itself(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "torchrun --nnodes 2" in capsys.readouterr().out
