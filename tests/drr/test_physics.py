"""HU -> mu and the optional detector realism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ct_pipeline.drr import add_poisson_noise, detector_blur, hu_to_mu

HU = [-3024.0, -2048.0, -1000.0, 0.0, 1000.0, 2000.0]
MU = [0.0, 0.0, 0.0, 0.02, 0.04, 0.06]


def test_hu_to_mu_numpy_values_and_air_clipping():
    mu = hu_to_mu(np.array(HU, dtype=np.float32))
    assert mu.dtype == np.float32
    np.testing.assert_allclose(mu, MU, atol=1e-8)


def test_hu_to_mu_torch_keeps_gradients_and_mu_water():
    hu = torch.tensor(HU, requires_grad=True)
    mu = hu_to_mu(hu, mu_water_per_mm=0.019)
    torch.testing.assert_close(mu, torch.tensor(MU) * 0.95)
    mu.sum().backward()
    # Clipped padding values get no gradient; the rest 0.019 / 1000 per HU.
    torch.testing.assert_close(hu.grad[:2], torch.zeros(2))
    torch.testing.assert_close(hu.grad[3:], torch.full((3,), 1.9e-5))


def test_hu_to_mu_rejects_non_positive_mu_water():
    with pytest.raises(ValueError, match="mu_water_per_mm"):
        hu_to_mu(np.zeros(3), mu_water_per_mm=0.0)


def test_poisson_noise_is_seeded_unbiased_and_has_quantum_variance():
    p = np.full((2, 64, 64), 2.0, dtype=np.float32)
    photons = 1e4
    first, again = (
        add_poisson_noise(p, photons, seed=3),
        add_poisson_noise(p, photons, seed=3),
    )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, add_poisson_noise(p, photons, seed=4))
    # Delta method: var(p_noisy) = 1 / expected counts = exp(p) / I0.
    expected_std = np.sqrt(np.exp(2.0) / photons)
    assert first.std() == pytest.approx(expected_std, rel=0.05)
    assert first.mean() == pytest.approx(2.0, abs=5 * expected_std / 64)


def test_poisson_noise_handles_zero_counts():
    noisy = add_poisson_noise(np.full((8, 8), 30.0, dtype=np.float32), 10.0, seed=0)
    assert np.isfinite(noisy).all()


def test_detector_blur_spreads_intensity_and_keeps_flat_fields():
    flat = np.full((1, 21, 21), 1.5, dtype=np.float32)
    np.testing.assert_allclose(detector_blur(flat, 2.0), flat, rtol=1e-6)
    p = np.zeros((21, 21), dtype=np.float32)
    p[10, 10] = 3.0
    blurred = detector_blur(p, 1.0)
    assert 0 < blurred[10, 10] < 3.0 and blurred[10, 11] > 0
    # The blur redistributes detected intensity, whose total is kept.
    assert np.exp(-blurred).sum() == pytest.approx(np.exp(-p).sum(), rel=1e-6)
    np.testing.assert_array_equal(detector_blur(p, 0.0), p)


def test_detector_blur_does_not_mix_views():
    p = np.zeros((2, 9, 9), dtype=np.float32)
    p[0, 4, 4] = 2.0
    assert np.abs(detector_blur(p, 1.5)[1]).max() == 0.0
