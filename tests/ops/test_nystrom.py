"""Nyström normalised-cut embeddings against the exact eigenvectors of the full affinity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.ops.nystrom import (
    farthest_point_sampling,
    kernel_matrix,
    nystrom_fit,
    sample_landmarks,
    subspace_distance,
)

DTYPE = torch.float64


def clustered(
    rng, n: int, clusters: int = 4, channels: int = 5, spread: float = 0.15, labels=False
):
    """Points around ``clusters`` well-separated centres, (n, channels) (and their labels)."""
    centres = 2.0 * rng.standard_normal((clusters, channels))
    label = rng.integers(0, clusters, n)
    points = centres[label] + spread * rng.standard_normal((n, channels))
    return (points, label) if labels else points


def dense_kernel(x: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    if kernel == "gaussian":
        squared = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.exp(-squared / (2 * sigma**2))
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return 0.5 * (1 + unit @ unit.T)


def exact_embedding(x: np.ndarray, k: int, kernel: str = "gaussian", sigma: float = 1.0):
    """The k smallest eigenpairs of I - D^-1/2 W D^-1/2 for the full dense W, and all values."""
    w = dense_kernel(x, kernel, sigma)
    deg = w.sum(1)
    values, vectors = np.linalg.eigh(w / np.sqrt(np.outer(deg, deg)))
    values, vectors = 1.0 - values[::-1], vectors[:, ::-1]
    return values[:k], np.ascontiguousarray(vectors[:, :k]), values


def projector_distance(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.linalg.norm(u @ u.T - v @ v.T))


@pytest.fixture
def rng():
    return np.random.default_rng(3)


# ---------------------------------------------------------------- exactness and accuracy


@pytest.mark.parametrize("kernel", ["gaussian", "cosine"])
def test_all_nodes_as_landmarks_is_exact(rng, kernel):
    n, k = 40, 4
    x = clustered(rng, n)
    values, vectors, _ = exact_embedding(x, k, kernel)
    fit = nystrom_fit(torch.from_numpy(x)[None], n, k, kernel=kernel, sigma=1.0)
    assert fit.eigenvectors.shape == (1, n, k) and fit.eigenvalues.shape == (1, k)
    assert projector_distance(vectors, fit.eigenvectors[0].numpy()) < 1e-8
    np.testing.assert_allclose(fit.eigenvalues[0].numpy(), values, atol=1e-10, rtol=0)
    # Orthonormal columns, ascending eigenvalues, sign convention.
    gram = fit.eigenvectors[0].T @ fit.eigenvectors[0]
    torch.testing.assert_close(gram, torch.eye(k, dtype=DTYPE), atol=1e-12, rtol=0)
    assert bool((fit.eigenvalues.diff(dim=-1) >= -1e-12).all())
    largest = fit.eigenvectors[0].abs().argmax(0)
    assert bool((fit.eigenvectors[0][largest, torch.arange(k)] > 0).all())


def test_accuracy_improves_with_landmarks(rng):
    n, k = 128, 4
    x = clustered(rng, n, clusters=4, spread=0.6)
    _, vectors, _ = exact_embedding(x, k, sigma=1.0)
    features = torch.from_numpy(x)[None]
    exact = torch.from_numpy(vectors)[None]
    distance = {}
    for m in (n // 8, n // 2):
        fit = nystrom_fit(features, m, k, sigma=1.0)
        distance[m] = float(subspace_distance(exact, fit.eigenvectors))
    assert distance[n // 2] < distance[n // 8]


def test_clear_eigengap_needs_few_landmarks(rng):
    """Four tight clusters: eigengap ~ 1 after the 4th eigenvalue, 16 of 200 points suffice."""
    n, k = 200, 4
    x = clustered(rng, n, clusters=4, spread=0.1)
    values, vectors, all_values = exact_embedding(x, k, sigma=1.0)
    assert all_values[k] - all_values[k - 1] > 0.5
    fit = nystrom_fit(torch.from_numpy(x)[None], 16, k, sigma=1.0)
    assert float(subspace_distance(torch.from_numpy(vectors)[None], fit.eigenvectors)) < 0.05
    np.testing.assert_allclose(fit.eigenvalues[0].numpy(), values, atol=1e-2)


def test_batched_fit_equals_separate_fits(rng):
    x = np.stack([clustered(rng, 30), clustered(rng, 30)])
    sigma = torch.tensor([1.0, 1.5], dtype=DTYPE)
    together = nystrom_fit(torch.from_numpy(x), 10, 3, sigma=sigma, landmarks="random", seed=4)
    for b in range(2):
        alone = nystrom_fit(
            torch.from_numpy(x[b : b + 1]),
            10,
            3,
            sigma=float(sigma[b]),
            landmarks=together.landmark_index[b : b + 1],
        )
        torch.testing.assert_close(together.eigenvectors[b], alone.eigenvectors[0])
        torch.testing.assert_close(together.eigenvalues[b], alone.eigenvalues[0])


# ---------------------------------------------------------------- landmarks


def brute_force_fps(x: np.ndarray, m: int, start: int) -> list[int]:
    chosen = [start]
    for _ in range(m - 1):
        d = np.min([((x - x[c]) ** 2).sum(-1) for c in chosen], axis=0)
        d[chosen] = -1.0
        chosen.append(int(np.argmax(d)))
    return chosen


def test_fps_matches_brute_force(rng):
    x = rng.standard_normal((2, 60, 4))
    starts = torch.tensor([5, 17])
    picked = farthest_point_sampling(torch.from_numpy(x), 12, start=starts)
    for b in range(2):
        assert picked[b].tolist() == brute_force_fps(x[b], 12, int(starts[b]))


def test_fps_spreads_points_and_covers_clusters(rng):
    x, labels = clustered(rng, 200, clusters=6, spread=0.05, labels=True)
    picked = farthest_point_sampling(torch.from_numpy(x)[None], 6, seed=1)[0].numpy()
    # Tight clusters far apart: the 6 farthest points land in 6 different clusters.
    assert sorted(labels[picked].tolist()) == list(range(6))
    # All N points, duplicates included, come out as a permutation.
    dup = torch.from_numpy(np.concatenate([x[:5], x[:5]]))[None]
    assert sorted(farthest_point_sampling(dup, 10)[0].tolist()) == list(range(10))


@pytest.mark.parametrize("method", ["fps", "random"])
def test_seeding_is_deterministic(rng, method):
    x = torch.from_numpy(rng.standard_normal((3, 50, 4)))
    a = sample_landmarks(x, 10, method, seed=11)
    b = sample_landmarks(x, 10, method, seed=11)
    assert torch.equal(a, b) and a.shape == (3, 10)
    assert all(len(set(row.tolist())) == 10 for row in a)
    assert not torch.equal(a, sample_landmarks(x, 10, method, seed=12))
    fit_a = nystrom_fit(x, 10, 2, sigma=1.0, landmarks=method, seed=11)
    fit_b = nystrom_fit(x, 10, 2, sigma=1.0, landmarks=method, seed=11)
    assert torch.equal(fit_a.eigenvectors, fit_b.eigenvectors)


# ---------------------------------------------------------------- gradients


def test_gradcheck_features_and_sigma(rng):
    x = torch.from_numpy(clustered(rng, 9, clusters=3, channels=2, spread=0.4))[None]
    x.requires_grad_()
    sigma = torch.tensor(1.2, dtype=DTYPE, requires_grad=True)
    index = torch.tensor([[0, 3, 5, 8, 1]])

    def embed(features, bandwidth):
        fit = nystrom_fit(features, 5, 2, sigma=bandwidth, landmarks=index, backward="exact")
        return fit.eigenvalues, fit.eigenvectors

    assert torch.autograd.gradcheck(embed, (x, sigma))


def test_gradients_finite_float32_with_duplicates(rng):
    """Repeated points make W_mm singular without jitter; gradients stay finite."""
    base = clustered(rng, 60, clusters=3, channels=8, spread=0.2)
    x = torch.from_numpy(np.concatenate([base, base[:20]])).float()[None].requires_grad_()
    sigma = torch.tensor(1.0, requires_grad=True)
    fit = nystrom_fit(x, 40, 4, sigma=sigma, landmarks="random")
    loss = (fit.eigenvectors[..., 1:] ** 4).sum() + fit.eigenvalues.sum()
    loss.backward()
    assert bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(sigma.grad))
    assert float(x.grad.abs().max()) > 0


# ---------------------------------------------------------------- helpers and errors


def test_kernel_matrix_and_subspace_distance(rng):
    x, y = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 3))
    got = kernel_matrix(torch.from_numpy(x), torch.from_numpy(y), "gaussian", 0.7).numpy()
    expected = np.exp(-((x[:, :, None] - y[:, None]) ** 2).sum(-1) / (2 * 0.49))
    np.testing.assert_allclose(got, expected, atol=1e-14, rtol=0)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    a, b = q[:, :2], np.stack([q[:, 0], 0.6 * q[:, 1] + 0.8 * q[:, 2]], axis=1)
    distance = subspace_distance(torch.from_numpy(a)[None], torch.from_numpy(b)[None])
    np.testing.assert_allclose(distance.numpy(), [0.8], atol=1e-14)


def test_bad_inputs_name_the_argument(rng):
    x = torch.from_numpy(rng.standard_normal((1, 20, 3)))
    with pytest.raises(ValueError, match="num_landmarks"):
        nystrom_fit(x, 21, 2, sigma=1.0)
    with pytest.raises(ValueError, match="num_landmarks"):
        nystrom_fit(x, 0, 1, sigma=1.0)
    with pytest.raises(ValueError, match="k must"):
        nystrom_fit(x, 5, 6, sigma=1.0)
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="features must be finite"):
        nystrom_fit(bad, 5, 2, sigma=1.0)
    with pytest.raises(ValueError, match="sigma"):
        nystrom_fit(x, 5, 2)
    with pytest.raises(ValueError, match="sigma"):
        nystrom_fit(x, 5, 2, sigma=-1.0)
    with pytest.raises(ValueError, match="kernel"):
        nystrom_fit(x, 5, 2, kernel="laplace", sigma=1.0)
    with pytest.raises(ValueError, match="landmarks"):
        nystrom_fit(x, 5, 2, sigma=1.0, landmarks="kmeans")
    with pytest.raises(ValueError, match="landmarks"):
        nystrom_fit(x, 3, 2, sigma=1.0, landmarks=torch.tensor([[1, 1, 2]]))
    with pytest.raises(ValueError, match="jitter"):
        nystrom_fit(x, 5, 2, sigma=1.0, jitter=-1.0)
    with pytest.raises(ValueError, match="start"):
        farthest_point_sampling(x, 3, start=torch.tensor([20]))
