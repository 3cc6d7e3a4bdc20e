import pytest
import torch
from torch import nn

from ct_pipeline.training.checkpoint import (
    LAST,
    find_resumable,
    load_checkpoint,
    save_checkpoint,
)
from ct_pipeline.training.config import TrainConfig


def _trained_state():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_through_weights_only_load(tmp_path):
    model, optimizer, scheduler = _trained_state()
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None,
        "epoch": 3,
        "config": TrainConfig().to_dict(),
        "best_score": 21.5,
        "best_epoch": 2,
        "history": [{"epoch": 1, "train/loss": 0.5}],
    }
    save_checkpoint(tmp_path / LAST, payload)
    loaded = load_checkpoint(tmp_path / LAST)
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach())
    restored = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=1e-2)
    restored.load_state_dict(loaded["optimizer"])
    torch.testing.assert_close(
        restored.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert loaded["scheduler"]["last_epoch"] == 1
    assert (
        loaded["config"] == TrainConfig().to_dict()
        and loaded["history"] == payload["history"]
    )


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path / LAST, {"epoch": 1})
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(tmp_path / LAST, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(tmp_path / LAST) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == [
        LAST
    ]  # no temporary file left behind


def test_find_resumable(tmp_path):
    config = TrainConfig()
    assert find_resumable(tmp_path, config) is None
    save_checkpoint(tmp_path / LAST, {"epoch": 4, "config": config.to_dict()})
    assert find_resumable(tmp_path, config)["epoch"] == 4
    with pytest.raises(ValueError, match=r"different config \(fields \['model'\]\)"):
        find_resumable(tmp_path, TrainConfig(model="small"))


def test_a_truncated_last_checkpoint_is_named(tmp_path):
    """Issue: a truncated last.pt gave an error that did not name the file."""
    config = TrainConfig()
    save_checkpoint(tmp_path / LAST, {"epoch": 4, "config": config.to_dict()})
    data = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*last\.pt"):
        find_resumable(tmp_path, config)


@pytest.mark.parametrize("in_the_way", ["checkpoints", "."])
def test_a_file_where_the_checkpoint_folder_goes_fails_before_training(
    tmp_path, in_the_way
):
    """Refused before any patient is read or any epoch runs (the data here
    does not even exist), naming the file in the way."""
    from ct_pipeline.training import train_model

    blocker = tmp_path / "06_models"
    blocker.write_text("not a folder")
    folder = blocker / "checkpoints" if in_the_way == "checkpoints" else blocker
    config = TrainConfig(checkpoint_dir=str(folder), device="cpu")
    with pytest.raises(ValueError, match="train.checkpoint_dir") as error:
        train_model({}, {}, {"train": ["a"], "val": ["b"], "test": []}, config)
    assert f"{blocker} is a file" in str(error.value)
