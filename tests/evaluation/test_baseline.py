"""The training-set mean volume baseline."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.evaluation.baseline import mean_volume


def test_mean_volume_streams_a_generator_and_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    volumes = [rng.random((6, 7, 8)).astype(np.float32) for _ in range(5)]
    consumed = []

    def stream():
        for volume in volumes:
            consumed.append(1)
            yield volume

    mean = mean_volume(stream())
    assert len(consumed) == 5
    assert mean.dtype == np.float32 and mean.shape == (6, 7, 8)
    np.testing.assert_allclose(mean, np.mean(volumes, axis=0), atol=1e-7)


def test_mean_volume_of_known_volumes() -> None:
    volumes = [np.full((4, 4, 4), v) for v in (0.0, 0.25, 1.0)]
    assert np.all(mean_volume(volumes) == np.float32(1.25 / 3))


def test_mean_volume_rejects_empty_and_mixed_shapes() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mean_volume([])
    with pytest.raises(ValueError, match=r"expected \(4, 4, 4\), got \(4, 4, 5\)"):
        mean_volume([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))])
    with pytest.raises(ValueError, match="3-D"):
        mean_volume([np.zeros((4, 4))])
