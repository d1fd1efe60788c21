"""Laplacians against dense numpy and scipy.sparse.csgraph, with spectral invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import laplacian as csgraph_laplacian

from cheeger.ops.graph import NeighborGraph, symmetrize, to_dense
from cheeger.ops.knn import knn_graph
from cheeger.ops.laplacian import (
    LAPLACIAN_KINDS,
    LaplacianKind,
    inverse_degree_power,
    lambda_max_bound,
    laplacian_kind,
    laplacian_matvec,
    laplacian_to_dense,
    laplacian_to_scipy,
    normalized_adjacency,
)
from tests.ops.spectra import graph_from_dense

DTYPE = torch.float64
ZERO = 1e-9  # eigenvalues below this count as zero (float64, N <= 40)


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def components_dense(rng, sizes: list[int], density: float = 0.6) -> np.ndarray:
    """Block-diagonal symmetric weights: one connected random block per size (1: isolated)."""
    n = sum(sizes)
    dense = np.zeros((n, n))
    start = 0
    for size in sizes:
        if size > 1:
            block = np.triu(rng.uniform(0.1, 1.0, (size, size)), 1)
            block *= rng.random((size, size)) < density
            chain = np.arange(size - 1)
            block[chain, chain + 1] = rng.uniform(0.1, 1.0, size - 1)  # keeps it connected
            dense[start : start + size, start : start + size] = block + block.T
        start += size
    permutation = rng.permutation(n)
    return dense[np.ix_(permutation, permutation)]


def oracle(dense: np.ndarray, kind: str) -> np.ndarray:
    """Dense numpy Laplacian of one (N, N) adjacency; isolated nodes: identity rows."""
    d = dense.sum(1)
    if kind == "unnormalized":
        return np.diag(d) - dense
    isolated = d == 0
    if kind == "symmetric":
        s = np.where(isolated, 0.0, 1.0 / np.sqrt(np.where(isolated, 1.0, d)))
        return np.eye(len(d)) - s[:, None] * dense * s[None, :]
    inv = np.where(isolated, 0.0, 1.0 / np.where(isolated, 1.0, d))
    return np.eye(len(d)) - inv[:, None] * dense


@pytest.fixture
def mixed_graph(rng):
    """Batch of 2: components of sizes (6, 5, 1, 4, 1, 1) and a connected 18-node graph."""
    first = components_dense(rng, [6, 5, 1, 4, 1, 1])
    second = components_dense(rng, [18], density=0.3)
    return np.stack([first, second]), graph_from_dense(np.stack([first, second]))


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_dense_matvec_and_scipy_forms_match_the_oracle(mixed_graph, rng, kind):
    dense, graph = mixed_graph
    x = torch.from_numpy(rng.standard_normal((2, 18, 5)))
    for b in range(2):
        expected = oracle(dense[b], kind)
        np.testing.assert_allclose(laplacian_to_dense(graph, kind)[b].numpy(), expected, atol=1e-14)
        np.testing.assert_allclose(
            laplacian_to_scipy(graph, kind)[b].toarray(), expected, atol=1e-14
        )
        np.testing.assert_allclose(
            laplacian_matvec(graph, x, kind)[b].numpy(), expected @ x[b].numpy(), atol=1e-13
        )


def test_agrees_with_scipy_csgraph(mixed_graph):
    dense, graph = mixed_graph
    for b in range(2):
        combinatorial = csgraph_laplacian(scipy.sparse.csr_matrix(dense[b])).toarray()
        np.testing.assert_allclose(
            laplacian_to_dense(graph, "unnormalized")[b].numpy(), combinatorial, atol=1e-14
        )
        # scipy's normalised Laplacian puts 0 on an isolated node's diagonal; ours puts 1.
        normed = csgraph_laplacian(scipy.sparse.csr_matrix(dense[b]), normed=True).toarray()
        isolated = dense[b].sum(1) == 0
        normed[isolated, isolated] = 1.0
        np.testing.assert_allclose(
            laplacian_to_dense(graph, "symmetric")[b].numpy(), normed, atol=1e-14
        )


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_spectral_invariants(mixed_graph, kind):
    dense, graph = mixed_graph
    laplacian = laplacian_to_dense(graph, kind).numpy()
    bound = lambda_max_bound(graph, kind).numpy()
    for b in range(2):
        matrix = laplacian[b]
        n_components, _ = connected_components(scipy.sparse.csr_matrix(dense[b]), directed=False)
        isolated = int((dense[b].sum(1) == 0).sum())
        if kind == "random_walk":
            # Not symmetric, but similar to L_sym: real spectrum, same eigenvalues.
            eigenvalues = np.sort(np.linalg.eigvals(matrix).real)
            np.testing.assert_allclose(
                eigenvalues,
                np.linalg.eigvalsh(laplacian_to_dense(graph, "symmetric")[b].numpy()),
                atol=1e-10,
            )
        else:
            np.testing.assert_allclose(matrix, matrix.T, atol=0)
            eigenvalues = np.linalg.eigvalsh(matrix)
        assert eigenvalues.min() >= -1e-10  # PSD
        assert eigenvalues.max() <= bound[b] + 1e-10
        zero_modes = int((np.abs(eigenvalues) < ZERO).sum())
        if kind == "unnormalized":
            assert zero_modes == n_components
            np.testing.assert_allclose(matrix.sum(1), 0.0, atol=1e-14)
        else:
            # Isolated nodes are eigenvectors with eigenvalue 1, not zero modes.
            assert zero_modes == n_components - isolated
            assert int((np.abs(eigenvalues - 1.0) < ZERO).sum()) >= isolated
        if kind == "symmetric":
            root_degree = np.sqrt(dense[b].sum(1))
            np.testing.assert_allclose(matrix @ root_degree, 0.0, atol=1e-14)
        if kind == "random_walk":
            connected = dense[b].sum(1) > 0
            np.testing.assert_allclose((matrix @ np.ones(18))[connected], 0.0, atol=1e-14)


def test_isolated_rows_are_identity_rows(mixed_graph):
    dense, graph = mixed_graph
    isolated = np.flatnonzero(dense[0].sum(1) == 0)
    assert isolated.size == 3
    for kind in ("symmetric", "random_walk"):
        rows = laplacian_to_dense(graph, kind)[0].numpy()[isolated]
        np.testing.assert_array_equal(rows, np.eye(18)[isolated])
    np.testing.assert_array_equal(inverse_degree_power(graph)[0].numpy()[isolated], 0.0)


def test_duplicate_points_knn_graph(rng):
    # Clusters of exact copies: weights 1 inside a cluster, Gaussian between.
    base = rng.standard_normal((1, 6, 2)) * 4
    x = torch.from_numpy(np.repeat(base, 3, axis=1))
    graph = knn_graph(x, 2, sigma=0.3, mode="mutual")  # each point's 2 copies: 6 triangles
    dense = to_dense(graph)[0].numpy()
    n_components, _ = connected_components(scipy.sparse.csr_matrix(dense), directed=False)
    assert n_components == 6
    for kind in ("unnormalized", "symmetric"):
        eigenvalues = np.linalg.eigvalsh(laplacian_to_dense(graph, kind)[0].numpy())
        assert int((np.abs(eigenvalues) < ZERO).sum()) == 6
        np.testing.assert_allclose(laplacian_to_dense(graph, kind)[0].numpy(), oracle(dense, kind))


def test_lambda_max_bound_values(mixed_graph):
    dense, graph = mixed_graph
    np.testing.assert_allclose(lambda_max_bound(graph, "symmetric").numpy(), [2.0, 2.0])
    np.testing.assert_allclose(lambda_max_bound(graph, "random_walk").numpy(), [2.0, 2.0])
    np.testing.assert_allclose(
        lambda_max_bound(graph, "unnormalized").numpy(), 2 * dense.sum(-1).max(-1)
    )
    # A single edge (bipartite) attains the normalised bound: eigenvalues 0 and 2.
    edge = graph_from_dense(np.array([[[0.0, 0.3], [0.3, 0.0]]]))
    np.testing.assert_allclose(
        np.linalg.eigvalsh(laplacian_to_dense(edge, "symmetric")[0].numpy()), [0.0, 2.0], atol=1e-15
    )


def test_normalized_adjacency(mixed_graph):
    _, graph = mixed_graph
    normalised = normalized_adjacency(graph)
    assert torch.equal(normalised.index, graph.index)
    eye = torch.eye(18, dtype=DTYPE)
    torch.testing.assert_close(eye - to_dense(normalised), laplacian_to_dense(graph, "symmetric"))


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_matvec_gradcheck_with_isolated_nodes(rng, kind):
    dense = components_dense(rng, [4, 1, 3, 1])[None]
    graph = graph_from_dense(dense)
    edges = graph.weight > 0
    values = graph.weight[edges].clone().requires_grad_()
    x = torch.from_numpy(rng.standard_normal((1, 9, 2))).requires_grad_()

    def apply(v, vectors):
        # Only real edges move; padding stays 0, so isolated nodes stay isolated.
        weight = torch.zeros_like(graph.weight).masked_scatter(edges, v)
        return laplacian_matvec(NeighborGraph(graph.index, weight), vectors, kind)

    assert torch.autograd.gradcheck(apply, (values, x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_gradients_finite_at_isolated_and_nearly_isolated_nodes(rng, kind, dtype):
    # Triangle 0-1-2 plus edge 2-3; node 4 isolated; nodes 5 and 6 joined by an edge so
    # weak that both degrees are far below machine epsilon (d^-3/2 would overflow).
    dense = np.zeros((1, 7, 7))
    for i, j, w in [(0, 1, 0.5), (1, 2, 0.7), (0, 2, 0.2), (2, 3, 0.9), (5, 6, 1e-30)]:
        dense[0, i, j] = dense[0, j, i] = w
    graph = graph_from_dense(dense)
    index, weight = graph.index, graph.weight.to(dtype).requires_grad_()
    x = torch.from_numpy(rng.standard_normal((1, 7, 3))).to(dtype)
    out = laplacian_matvec(NeighborGraph(index, weight), x, kind)
    assert torch.isfinite(out).all()
    (out**2).sum().backward()
    assert torch.isfinite(weight.grad).all()
    assert torch.isfinite(laplacian_to_dense(NeighborGraph(index, weight), kind)).all()


def test_eps_decides_what_is_isolated():
    graph = graph_from_dense(np.array([[[0.0, 1e-20], [1e-20, 0.0]]]))
    default = laplacian_to_dense(graph, "symmetric")[0].numpy()
    np.testing.assert_array_equal(default, np.eye(2))  # 1e-20 <= float64 eps: isolated
    strict = laplacian_to_dense(graph, "symmetric", eps=0.0)[0].numpy()
    np.testing.assert_allclose(strict, [[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        laplacian_to_dense(graph, "symmetric", eps=-1.0)


def test_kind_names():
    assert LAPLACIAN_KINDS == ("unnormalized", "symmetric", "random_walk")
    assert laplacian_kind("random_walk") is LaplacianKind.RANDOM_WALK
    assert laplacian_kind(LaplacianKind.SYMMETRIC) == "symmetric"
    with pytest.raises(ValueError, match="kind must be one of"):
        laplacian_kind("normalized")
    graph = graph_from_dense(np.array([[[0.0, 1.0], [1.0, 0.0]]]))
    with pytest.raises(ValueError, match="kind must be one of"):
        laplacian_matvec(graph, torch.zeros(1, 2, 1, dtype=DTYPE), "sym")


def test_symmetrized_random_graph_end_to_end(rng):
    # Directed random lists -> union graph -> Laplacian equals the dense oracle.
    index = torch.from_numpy(rng.integers(0, 25, (2, 25, 3)))
    weight = torch.from_numpy(rng.uniform(0.1, 1.0, (2, 25, 3)))
    graph = symmetrize(index, weight, "union")
    dense = to_dense(graph).numpy()
    for kind in LAPLACIAN_KINDS:
        for b in range(2):
            np.testing.assert_allclose(
                laplacian_to_dense(graph, kind)[b].numpy(), oracle(dense[b], kind), atol=1e-14
            )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 14),
    density=st.sampled_from([0.0, 0.1, 0.3, 0.8]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_graphs_fuzz(n, density, seed):
    # Empty, sparse (isolated nodes, many components) and dense graphs alike.
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(0.05, 1.0, (n, n)) * (rng.random((n, n)) < density), 1)
    dense = upper + upper.T
    graph = graph_from_dense(dense[None])
    n_components, _ = connected_components(scipy.sparse.csr_matrix(dense), directed=False)
    isolated = int((dense.sum(1) == 0).sum())
    x = torch.from_numpy(rng.standard_normal((1, n, 2)))
    for kind in LAPLACIAN_KINDS:
        expected = oracle(dense, kind)
        np.testing.assert_allclose(laplacian_to_dense(graph, kind)[0].numpy(), expected, atol=1e-14)
        np.testing.assert_allclose(
            laplacian_matvec(graph, x, kind)[0].numpy(), expected @ x[0].numpy(), atol=1e-13
        )
        if kind == "random_walk":
            continue
        eigenvalues = np.linalg.eigvalsh(expected)
        assert eigenvalues.min() >= -1e-10
        assert eigenvalues.max() <= float(lambda_max_bound(graph, kind)[0]) + 1e-10
        zero_modes = int((np.abs(eigenvalues) < ZERO).sum())
        assert zero_modes == (n_components if kind == "unnormalized" else n_components - isolated)


def test_padding_may_point_at_any_node(mixed_graph, rng):
    # Same weights, padding slots aimed at random nodes instead of their own row.
    dense, graph = mixed_graph
    padding = graph.weight == 0
    index = graph.index.clone()
    index[padding] = torch.from_numpy(rng.integers(0, 18, int(padding.sum())))
    moved = NeighborGraph(index, graph.weight)
    x = torch.from_numpy(rng.standard_normal((2, 18, 3)))
    for kind in LAPLACIAN_KINDS:
        torch.testing.assert_close(
            laplacian_matvec(moved, x, kind), laplacian_matvec(graph, x, kind)
        )
        torch.testing.assert_close(laplacian_to_dense(moved, kind), laplacian_to_dense(graph, kind))
