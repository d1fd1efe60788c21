"""Marchenko-Pastur noise floor: quadrature, simulations with and without planted signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import torch

from cheeger.ops.random_matrix import (
    denoise_features,
    marchenko_pastur_edges,
    marchenko_pastur_median,
    noise_floor,
    projected_snr,
    snr_threshold,
)


def mp_median_by_quad(ratio: float) -> float:
    """Independent oracle: scipy quadrature of the MP density and a root find."""
    low, high = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2

    def density(x):
        return math.sqrt(max((high - x) * (x - low), 0.0)) / (2 * math.pi * ratio * x)

    def cdf(t):
        return scipy.integrate.quad(density, low, t, limit=200)[0]

    return scipy.optimize.brentq(lambda t: cdf(t) - 0.5, low, high, xtol=1e-12)


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0])
def test_median_matches_scipy_quadrature(ratio):
    assert marchenko_pastur_median(ratio) == pytest.approx(mp_median_by_quad(ratio), rel=1e-6)


def test_median_above_one_uses_the_swapped_law():
    # For gamma > 1 the nonzero eigenvalues of X^T X / N are gamma times MP(1 / gamma).
    assert marchenko_pastur_median(4.0) == pytest.approx(4.0 * mp_median_by_quad(0.25), rel=1e-6)


def test_median_matches_simulated_spectrum():
    rng = np.random.default_rng(0)
    n, c = 8000, 800
    x = rng.standard_normal((n, c))
    eig = np.linalg.eigvalsh(x.T @ x / n)
    assert np.median(eig) == pytest.approx(marchenko_pastur_median(c / n), rel=0.01)


def test_edges_formula():
    low, high = marchenko_pastur_edges(2.0, 0.25)
    assert float(low) == pytest.approx(2.0 * 0.25) and float(high) == pytest.approx(2.0 * 2.25)


def noise(batch, n, c, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return sigma * torch.randn(batch, n, c, generator=g, dtype=torch.float64)


def test_pure_noise_keeps_almost_no_components():
    features = noise(4, 4096, 64, sigma=2.0, seed=0)
    floor = noise_floor(features)
    torch.testing.assert_close(
        floor.sigma2, torch.full((4,), 4.0, dtype=torch.float64), rtol=0.03, atol=0
    )
    # Only fluctuations at the edge can cross it (Tracy-Widom scale, N^-2/3).
    assert int(floor.rank.max()) <= 1


def planted(n, c, rank, strength, sigma, seed):
    """Noise plus ``rank`` orthogonal directions of population variance strength * sigma^2."""
    g = torch.Generator().manual_seed(seed)
    directions, _ = torch.linalg.qr(torch.randn(c, rank, generator=g, dtype=torch.float64))
    scores = torch.randn(n, rank, generator=g, dtype=torch.float64)
    signal = math.sqrt(strength - 1.0) * sigma * scores @ directions.T
    return (signal + sigma * torch.randn(n, c, generator=g, dtype=torch.float64)).unsqueeze(
        0
    ), directions


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_planted_signal_above_threshold_keeps_exactly_its_rank(rank):
    n, c = 4096, 64
    gamma = c / n
    # Population spike 1 + 4 sqrt(gamma): well above the BBP threshold 1 + sqrt(gamma).
    features, _ = planted(n, c, rank, 1.0 + 4.0 * math.sqrt(gamma), sigma=1.5, seed=rank)
    assert int(noise_floor(features).rank) == rank


def test_planted_signal_below_threshold_is_not_detected():
    n, c = 4096, 64
    features, _ = planted(n, c, 3, 1.0 + 0.3 * math.sqrt(c / n), sigma=1.0, seed=7)
    assert int(noise_floor(features).rank) <= 1


def test_denoise_recovers_the_signal_subspace():
    n, c, rank = 4096, 32, 2
    features, directions = planted(n, c, rank, 6.0, sigma=1.0, seed=11)
    denoised, kept = denoise_features(features)
    assert int(kept) == rank
    centred = denoised[0] - denoised[0].mean(0)
    # Every denoised row lies in the planted span (up to the estimation error of the span).
    residual = centred - centred @ directions @ directions.T
    assert residual.norm() / centred.norm() < 0.1
    # The projection keeps most of the signal energy and drops most of the noise energy.
    assert centred.norm() ** 2 / (features[0] - features[0].mean(0)).norm() ** 2 < 0.5


def test_denoise_is_differentiable():
    features = planted(512, 8, 2, 8.0, 1.0, 3)[0].requires_grad_(True)
    denoised, _ = denoise_features(features)
    denoised.square().sum().backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().max() > 0


def test_projected_snr_of_noise_is_near_one_and_below_the_ceiling():
    features = noise(1, 4096, 64, sigma=3.0, seed=5)
    g = torch.Generator().manual_seed(1)
    vectors, _ = torch.linalg.qr(torch.randn(1, 4096, 8, generator=g, dtype=torch.float64))
    snr = projected_snr(vectors, features, torch.tensor([9.0], dtype=torch.float64))
    assert float(snr.mean()) == pytest.approx(1.0, abs=0.15)
    assert bool((snr < snr_threshold(8, 64)).all())


def test_projected_snr_sees_a_direction_carrying_signal():
    n, c = 2048, 16
    g = torch.Generator().manual_seed(2)
    direction = torch.randn(n, 1, generator=g, dtype=torch.float64)
    direction = direction / direction.norm()
    features = torch.randn(1, n, c, generator=g, dtype=torch.float64)
    features = features + 20.0 * direction * torch.randn(1, 1, c, generator=g, dtype=torch.float64)
    snr = projected_snr(direction.unsqueeze(0), features, torch.ones(1, dtype=torch.float64))
    assert float(snr) > snr_threshold(1, c)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="ratio must be > 0"):
        marchenko_pastur_median(0.0)
    with pytest.raises(ValueError, match="features must be \\(B, N, C\\)"):
        noise_floor(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="num_vectors and channels"):
        snr_threshold(0, 4)
