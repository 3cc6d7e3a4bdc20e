"""Project settings: partial overrides keep the keys they do not name."""

from __future__ import annotations

import shutil
from pathlib import Path

from tiny_project import REPO_ROOT


def test_a_partial_local_block_and_runtime_params_keep_base_siblings(tmp_path: Path):
    """Issue: a `drr:` block naming only num_views gave KeyError 'num_views' elsewhere,
    and --params on top of a local file gave KeyError 'seed'."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "conf" / "local" / "parameters.yml").write_text(
        "drr:\n  num_views: 4\ntrain:\n  epochs: 3\n"
    )
    bootstrap_project(tmp_path)
    with KedroSession.create(
        project_path=tmp_path, runtime_params={"train": {"lr": 0.01}}
    ) as session:
        params = session.load_context().params
    assert params["drr"]["num_views"] == 4
    assert params["drr"]["geometry"]["sad_mm"] == 1000.0  # kept from base
    assert params["train"]["epochs"] == 3  # local
    assert params["train"]["lr"] == 0.01  # runtime
    assert params["train"]["seed"] == 0  # base, under both


def test_the_gpu_environment_is_a_valid_medical_setup(tmp_path: Path):
    """`kedro run --env gpu` passes every parameter check and names the medical config."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ct_pipeline.hooks import base_parameters
    from ct_pipeline.hooks.checks import check_parameters
    from ct_pipeline.training import TrainConfig

    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "src").mkdir()
    bootstrap_project(tmp_path)
    with KedroSession.create(project_path=tmp_path, env="gpu") as session:
        context = session.load_context()
        params = context.params
        defaults = base_parameters(context.config_loader)
    check_parameters(params, defaults)
    config = TrainConfig.from_params(params["train"])
    assert (config.model, config.world_size, config.num_views) == ("medical", 4, 8)
    assert params["preprocess"]["volume_size"] == 128
    assert params["train"]["loss_weights"]["l1"] == 1.0  # the rest from base
