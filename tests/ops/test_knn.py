"""Exact kNN against scipy's cdist, ties included; kNN graphs against dense constructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from cheeger.ops.graph import to_dense, validate_graph
from cheeger.ops.knn import knn_graph, knn_indices

DTYPE = torch.float64


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def brute_force_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per batch element: indices of the k nearest others, and the sorted distance matrix rows."""
    indices, distances = [], []
    for points in x:
        d = cdist(points, points, "sqeuclidean")
        np.fill_diagonal(d, np.inf)
        indices.append(np.argsort(d, axis=1, kind="stable")[:, :k])
        distances.append(d)
    return np.stack(indices), np.stack(distances)


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_indices_match_cdist(rng, chunk_size, device64):
    x = rng.standard_normal((2, 40, 5))
    got = knn_indices(torch.from_numpy(x).to(device64), 6, chunk_size=chunk_size)
    assert got.device.type == device64
    got = got.cpu().numpy()
    expected, _ = brute_force_knn(x, 6)
    np.testing.assert_array_equal(got, expected)


def check_tied_neighbours(x: np.ndarray, got: np.ndarray, k: int):
    """Valid answer under ties: distinct, never self, distances equal to the k smallest."""
    _, distances = brute_force_knn(x, k)
    n = x.shape[1]
    for b in range(x.shape[0]):
        for i in range(n):
            row = got[b, i]
            assert len(set(row.tolist())) == k and i not in row
            chosen = distances[b, i, row]
            np.testing.assert_allclose(chosen, np.sort(distances[b, i])[:k], atol=1e-12)
            assert np.all(np.diff(chosen) >= -1e-12)


def test_duplicate_points_are_neighbours_at_distance_zero(rng):
    base = rng.standard_normal((1, 12, 3))
    x = np.concatenate([base, base, base[:, :4]], axis=1)  # 28 points, many triplets
    got = knn_indices(torch.from_numpy(x), 3, chunk_size=5).numpy()
    check_tied_neighbours(x, got, 3)
    # Node 0 has two exact copies (12 and 24): they come first.
    assert set(got[0, 0, :2].tolist()) == {12, 24}


def test_all_points_identical():
    x = np.ones((2, 9, 4))
    got = knn_indices(torch.from_numpy(x), 8).numpy()
    for b in range(2):
        for i in range(9):
            assert sorted(got[b, i].tolist()) == [j for j in range(9) if j != i]


def test_integer_lattice_ties(rng):
    # Points on a line with unit spacing: each interior point has two neighbours at
    # distance 1, two at distance 2, ...; any order within a tie is acceptable.
    x = np.arange(15, dtype=float).reshape(1, 15, 1)
    got = knn_indices(torch.from_numpy(x), 4, chunk_size=4).numpy()
    check_tied_neighbours(x, got, 4)


@pytest.mark.parametrize(
    ("features", "k", "message"),
    [
        (torch.zeros(1, 5, 2), 5, r"k must be an int in \[1, N - 1\]"),
        (torch.zeros(1, 5, 2), 0, r"k must be an int in \[1, N - 1\]"),
        (torch.zeros(1, 5, 2), 2.0, r"k must be an int in \[1, N - 1\]"),
        (torch.zeros(1, 0, 2), 1, "features must have at least one node"),
        (torch.full((1, 5, 2), float("inf")), 1, "features must be finite"),
        (torch.zeros(5, 2), 1, r"features must be \(B, N, C\)"),
    ],
)
def test_bad_input_raises(features, k, message):
    with pytest.raises(ValueError, match=message):
        knn_indices(features, k)
    with pytest.raises(ValueError, match=message):
        knn_graph(features, k, sigma=1.0)


def dense_knn_graph(x: np.ndarray, k: int, sigma: float, mode: str) -> np.ndarray:
    index, distances = brute_force_knn(x, k)
    directed = np.zeros_like(distances)
    for b in range(x.shape[0]):
        rows = np.repeat(np.arange(x.shape[1]), k)
        cols = index[b].reshape(-1)
        directed[b, rows, cols] = np.exp(-distances[b, rows, cols] / (2 * sigma**2))
    transposed = np.transpose(directed, (0, 2, 1))
    return np.maximum(directed, transposed) if mode == "union" else np.minimum(directed, transposed)


@pytest.mark.parametrize("mode", ["union", "mutual"])
def test_gaussian_knn_graph_matches_dense(rng, mode):
    x = rng.standard_normal((2, 30, 4))
    graph = knn_graph(torch.from_numpy(x), 5, sigma=1.2, mode=mode)
    np.testing.assert_allclose(
        to_dense(graph).numpy(), dense_knn_graph(x, 5, 1.2, mode), atol=1e-14
    )
    validate_graph(graph, check_symmetric=True)
    degree_count = (graph.weight > 0).sum(-1)
    if mode == "union":
        assert degree_count.min() >= 5
    else:
        assert degree_count.max() <= 5


def test_search_uses_the_metric_space(rng):
    x = rng.standard_normal((1, 25, 3))
    metric = np.array([[3.0, 0.0, 0.0], [0.0, 0.2, 1.0]])
    graph = knn_graph(torch.from_numpy(x), 4, sigma=2.0, metric=torch.from_numpy(metric))
    expected = dense_knn_graph(x @ metric.T, 4, 2.0, "union")
    np.testing.assert_allclose(to_dense(graph).numpy(), expected, atol=1e-14)


def test_cosine_graph_searches_by_angle(rng):
    x = rng.standard_normal((1, 20, 3)) * rng.uniform(0.1, 10.0, (1, 20, 1))
    graph = knn_graph(torch.from_numpy(x), 3, affinity="cosine", cosine_mode="shift")
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    index, _ = brute_force_knn(unit, 3)
    directed = np.zeros((1, 20, 20))
    for i in range(20):
        directed[0, i, index[0, i]] = (1 + unit[0, index[0, i]] @ unit[0, i]) / 2
    expected = np.maximum(directed, np.transpose(directed, (0, 2, 1)))
    np.testing.assert_allclose(to_dense(graph).numpy(), expected, atol=1e-14)


def test_self_tuning_graph_uses_the_mth_neighbour(rng):
    x = rng.standard_normal((1, 20, 2))
    graph = knn_graph(torch.from_numpy(x), 4, affinity="self_tuning", scale_neighbor=3)
    index, distances = brute_force_knn(x, 4)
    scale = np.sqrt(np.take_along_axis(distances[0], index[0, :, 2:3], 1)[:, 0])
    directed = np.zeros((20, 20))
    for i in range(20):
        for j in index[0, i]:
            directed[i, j] = np.exp(-distances[0, i, j] / (scale[i] * scale[j]))
    expected = np.maximum(directed, directed.T)
    np.testing.assert_allclose(to_dense(graph)[0].numpy(), expected, atol=1e-14)


def test_graph_with_duplicates_has_unit_weights_between_copies(rng):
    base = rng.standard_normal((1, 8, 3))
    x = torch.from_numpy(np.concatenate([base, base], axis=1))
    graph = knn_graph(x, 2, sigma=0.5)
    dense = to_dense(graph)[0].numpy()
    for i in range(8):
        assert dense[i, i + 8] == 1.0 and dense[i + 8, i] == 1.0
    validate_graph(graph, check_symmetric=True)


def test_knn_graph_gradcheck(rng):
    x = torch.from_numpy(rng.standard_normal((1, 9, 2))).requires_grad_()
    sigma = torch.tensor([0.9], dtype=DTYPE, requires_grad=True)
    metric = torch.from_numpy(rng.random(2) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, s, m: knn_graph(a, 3, sigma=s, metric=m).weight, (x, sigma, metric)
    )
    assert torch.autograd.gradcheck(
        lambda a: knn_graph(a, 3, affinity="self_tuning", scale_neighbor=2, mode="mutual").weight,
        (x,),
    )


def test_knn_graph_option_errors(rng):
    x = torch.from_numpy(rng.standard_normal((1, 6, 2)))
    with pytest.raises(ValueError, match="sigma must be given"):
        knn_graph(x, 2)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        knn_graph(x, 2, sigma=-1.0)
    with pytest.raises(ValueError, match="affinity must be one of"):
        knn_graph(x, 2, affinity="heat", sigma=1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        knn_graph(x, 2, sigma=1.0, mode="mean")
    with pytest.raises(ValueError, match=r"scale_neighbor must be an int in \[1, k\]"):
        knn_graph(x, 2, affinity="self_tuning")  # default scale_neighbor 7 > k


def test_degree_cap_bounds_hub_degree(rng):
    # A hub: the origin is at distance 1 from every basis vector e_i, which are sqrt(2)
    # apart, so all 30 of them list it first.
    x = np.concatenate([np.zeros((1, 30)), np.eye(30)])[None]
    free = knn_graph(torch.from_numpy(x), 2, sigma=1.0)
    assert int((free.weight[0, 0] > 0).sum()) == 30
    capped = knn_graph(torch.from_numpy(x), 2, sigma=1.0, max_degree=4)
    assert capped.max_degree <= 4
    validate_graph(capped, check_symmetric=True)
    assert torch.all(to_dense(capped) <= to_dense(free))


@pytest.mark.parametrize("affinity", ["gaussian", "self_tuning"])
def test_float32_copies_have_unit_weight(rng, affinity):
    """Copies used to come out a few ulps apart; the self-tuning scale of a point whose
    scale neighbour is a copy is then a few ulps too, and weights fell to exp(-1)."""
    base = rng.standard_normal((1, 30, 8)) * 10.0
    x = torch.from_numpy(np.concatenate([base, base], axis=1)).float()
    graph = knn_graph(x, 4, affinity=affinity, sigma=5.0, scale_neighbor=1)
    dense = to_dense(graph)[0]
    copies = torch.stack([dense[i, i + 30] for i in range(30)])
    assert torch.equal(copies, torch.ones(30))
