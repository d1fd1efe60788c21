"""partial_eigh: eigenpairs against scipy/numpy, gradients against the dense exact backward."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cheeger.ops import partial_eigh as partial_eigh_module
from cheeger.ops.eigh import canonicalize_eigenvector_signs, eigh
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.knn import knn_graph
from cheeger.ops.laplacian import (
    inverse_degree_power,
    lambda_max_bound,
    laplacian_matvec,
    laplacian_to_dense,
    laplacian_to_scipy,
)
from cheeger.ops.partial_eigh import (
    PartialEighNotConverged,
    partial_eigh,
)
from tests.ops.spectra import graph_from_dense

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These problems are far too small for threads to help; on a shared 2-core machine
    a second torch thread only adds synchronisation stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- graph builders


def point_graph(n: int, seed: int, dtype=F64, batch: int = 1, dim: int = 8, k: int = 8):
    """kNN graph (Gaussian weights, union) of standard normal points in dim dimensions.

    With dim = 8 the smallest nonzero eigenvalues of L_sym are 0.1-0.2 (of at most 2),
    so a relative accuracy of 1e-5 is within float32's reach.
    """
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, n, dim, generator=g, dtype=F64)
    graph = knn_graph(points, k, sigma=dim**0.5)
    return NeighborGraph(graph.index, graph.weight.to(dtype))


def components_dense(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    """Symmetric adjacency of connected random components (a chain plus random edges),
    nodes shuffled so that no solver sees a block structure."""
    n = sum(sizes)
    dense = np.zeros((n, n))
    start = 0
    for size in sizes:
        block = np.triu(rng.uniform(0.2, 1.0, (size, size)) * (rng.random((size, size)) < 0.3), 1)
        chain = np.arange(size - 1)
        block[chain, chain + 1] = rng.uniform(0.2, 1.0, size - 1)
        dense[start : start + size, start : start + size] = block + block.T
        start += size
    order = rng.permutation(n)
    return dense[np.ix_(order, order)]


def cycle_dense(n: int) -> np.ndarray:
    """Unit-weight cycle C_n: L = D - W has eigenvalues 2 - 2 cos(2 pi j / n), pairs j, n - j."""
    dense = np.zeros((n, n))
    i = np.arange(n)
    dense[i, (i + 1) % n] = dense[(i + 1) % n, i] = 1.0
    return dense


def projector_distance(u: np.ndarray, v: np.ndarray) -> float:
    """||U Uᵀ - V Vᵀ||_2 for orthonormal U, V of equal width: the sine of the largest
    principal angle, ||(I - V Vᵀ) U||_2, without forming an N x N matrix."""
    return float(np.linalg.norm(u - v @ (v.T @ u), 2))


def perturbed(graph: NeighborGraph, scale: float, seed: int) -> NeighborGraph:
    """Weights times (1 + scale (z_i + z_l)/2): a noise symmetric in the two endpoints."""
    g = torch.Generator().manual_seed(seed)
    batch, n, slots = graph.index.shape
    z = torch.randn(batch, n, generator=g, dtype=graph.weight.dtype)
    z_neighbour = z.gather(1, graph.index.reshape(batch, -1)).view(batch, n, slots)
    factor = 1.0 + scale * 0.5 * (z.unsqueeze(-1) + z_neighbour)
    return NeighborGraph(graph.index, graph.weight * factor)


def reference_eigenpairs(graph: NeighborGraph, kind: str, k: int):
    """k smallest eigenpairs per batch element from ARPACK (float64, tight tolerance)."""
    out = []
    for matrix in laplacian_to_scipy(graph, kind):
        values, vectors = scipy.sparse.linalg.eigsh(matrix, k, which="SA", tol=1e-13)
        order = np.argsort(values)
        out.append((values[order], vectors[:, order]))
    return out


# ---------------------------------------------------------------- forward


@pytest.fixture(scope="module")
def medium_graph():
    """Two 1500-node kNN graphs of 8-d points (batch of 2), float64."""
    return point_graph(1500, seed=3, batch=2)


@pytest.mark.parametrize("kind", ["symmetric", "unnormalized"])
@pytest.mark.parametrize(
    ("dtype", "tol", "rtol", "angle"),
    [(torch.float32, 1e-5, 1e-5, 1e-2), (F64, 1e-10, 1e-9, 1e-6)],
)
def test_eigenpairs_match_eigsh(medium_graph, kind, dtype, tol, rtol, angle, device):
    if device == "mps" and dtype == F64:
        pytest.skip("MPS has no float64")
    graph = NeighborGraph(
        medium_graph.index.to(device), medium_graph.weight.to(device=device, dtype=dtype)
    )
    k = 8
    result = partial_eigh(graph, k, kind, tol=tol)
    assert result.info.converged and result.info.method == "chebyshev"
    assert result.eigenvectors.device.type == device
    upper = lambda_max_bound(medium_graph, kind)
    graph = NeighborGraph(medium_graph.index, medium_graph.weight.to(dtype))
    result = type(result)(result.eigenvalues.cpu(), result.eigenvectors.cpu(), result.info)
    for b, (values, vectors) in enumerate(reference_eigenpairs(medium_graph, kind, k)):
        ours = result.eigenvalues[b].double().numpy()
        # Relative error, with a floor at 1e-3 of the spectrum's scale for the zero mode.
        floor = 1e-3 * float(upper[b])
        np.testing.assert_array_less(np.abs(ours - values), rtol * np.maximum(values, floor))
        ours_vectors = result.eigenvectors[b].double().numpy()
        assert projector_distance(ours_vectors, vectors) < angle
        np.testing.assert_allclose(ours_vectors.T @ ours_vectors, np.eye(k), atol=50 * tol)
    # The reported residuals are the true ones.
    image = laplacian_matvec(graph, result.eigenvectors, kind)
    residual = (image - result.eigenvectors * result.eigenvalues.unsqueeze(1)).norm(dim=1)
    residual = residual / upper.to(dtype).unsqueeze(-1)
    assert float(residual.max()) <= tol
    torch.testing.assert_close(residual, result.info.residuals.cpu(), rtol=0.05, atol=tol / 10)


def test_signs_are_canonical_and_batch_elements_independent(medium_graph):
    result = partial_eigh(medium_graph, 6)
    torch.testing.assert_close(
        canonicalize_eigenvector_signs(result.eigenvectors), result.eigenvectors
    )
    single = partial_eigh(NeighborGraph(medium_graph.index[1:], medium_graph.weight[1:]), 6)
    torch.testing.assert_close(single.eigenvalues[0], result.eigenvalues[1], rtol=0, atol=1e-12)
    u, v = single.eigenvectors[0].numpy(), result.eigenvectors[1].numpy()
    assert projector_distance(u, v) < 1e-6


@pytest.mark.parametrize("kind", ["symmetric", "unnormalized"])
@pytest.mark.parametrize("num_components", [5, 12])
def test_disconnected_graph_every_zero_mode(kind, num_components):
    """Eigenvalue 0 has multiplicity = number of components, all found (also when k = it)."""
    rng = np.random.default_rng(num_components)
    sizes = list(rng.integers(15, 40, num_components))
    dense = components_dense(rng, sizes)[None]
    graph = graph_from_dense(dense, extra=0)
    k = num_components  # the trap: every returned eigenvalue is 0
    result = partial_eigh(graph, k, kind, tol=1e-10)
    values = result.eigenvalues[0].numpy()
    np.testing.assert_allclose(values, 0.0, atol=1e-9)
    # Null space: component indicators, scaled by D^1/2 for the normalised Laplacian.
    labels = scipy.sparse.csgraph.connected_components(dense[0], directed=False)[1]
    onehot = (labels[:, None] == np.arange(num_components)[None, :]).astype(float)
    if kind == "symmetric":
        onehot = onehot * np.sqrt(dense[0].sum(1))[:, None]
    basis, _ = np.linalg.qr(onehot)
    assert projector_distance(result.eigenvectors[0].numpy(), basis) < 1e-8
    # One more eigenpair: the first nonzero eigenvalue follows the zeros.
    more = partial_eigh(graph, k + 1, kind, tol=1e-10)
    exact = np.linalg.eigvalsh(laplacian_to_dense(graph, kind)[0].numpy())
    np.testing.assert_allclose(more.eigenvalues[0].numpy(), exact[: k + 1], atol=1e-9)
    assert more.eigenvalues[0, -1] > 1e-3


def test_planted_degenerate_spectrum_of_a_cycle():
    """C_n: 0 once, then pairs; k = 5 ends on a complete pair, k = 4 splits one."""
    n = 60
    graph = graph_from_dense(cycle_dense(n)[None], extra=0)
    exact = np.sort(2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(n) / n))
    dense_vectors = np.linalg.eigh(laplacian_to_dense(graph, "unnormalized")[0].numpy())[1]
    result = partial_eigh(graph, 5, "unnormalized", tol=1e-11)
    np.testing.assert_allclose(result.eigenvalues[0].numpy(), exact[:5], rtol=1e-9, atol=1e-12)
    assert projector_distance(result.eigenvectors[0].numpy(), dense_vectors[:, :5]) < 1e-8
    split = partial_eigh(graph, 4, "unnormalized", tol=1e-11)
    np.testing.assert_allclose(split.eigenvalues[0].numpy(), exact[:4], rtol=1e-9, atol=1e-12)
    # The 4th vector lies in the eigenspace of the pair (3, 4).
    fourth = split.eigenvectors[0, :, 3].numpy()
    pair = dense_vectors[:, 3:5]
    np.testing.assert_allclose(np.linalg.norm(pair.T @ fourth), 1.0, atol=1e-9)


def test_random_start_is_filtered_before_it_is_accepted():
    """Found by fuzzing: the unfiltered random block of this float32 graph (weights 9 to
    24,000) held λ_2 = 30.7 as its lowest Ritz value, with a relative residual of 3e-5 <
    tol, and was returned for λ_1 = 0."""
    dense = np.zeros((6, 6))
    edges = {
        (0, 3): 25.667829,
        (1, 2): 352.76006,
        (1, 4): 15827.3281,
        (1, 5): 439.487286,
        (2, 3): 24137.1218,
        (2, 4): 8619.55227,
        (3, 4): 9.0799048,
        (4, 5): 198.006485,
    }
    for (i, j), w in edges.items():
        dense[i, j] = dense[j, i] = w
    graph = graph_from_dense(dense[None])
    graph = NeighborGraph(graph.index, graph.weight.float())
    bound = float(lambda_max_bound(graph, "unnormalized"))
    for seed in range(5):
        result = partial_eigh(graph, 1, "unnormalized", seed=seed)
        assert result.info.iterations >= 1
        assert abs(float(result.eigenvalues)) <= 1e-4 * bound  # λ_1 = 0, λ_2 = 30.7


def test_random_walk_eigenvectors_are_mapped_by_inverse_sqrt_degree():
    graph = point_graph(300, seed=5)
    result = partial_eigh(graph, 6, "random_walk", tol=1e-11)
    symmetric = partial_eigh(graph, 6, "symmetric", tol=1e-11)
    torch.testing.assert_close(result.eigenvalues, symmetric.eigenvalues)
    vectors = result.eigenvectors[0]
    rw = laplacian_to_dense(graph, "random_walk")[0]
    torch.testing.assert_close(rw @ vectors, vectors * result.eigenvalues[0], atol=1e-9, rtol=0)
    d = graph.weight.sum(-1)[0]
    torch.testing.assert_close(vectors.T @ (d.unsqueeze(-1) * vectors), torch.eye(6, dtype=F64))


def test_warm_start_converges_in_far_fewer_iterations():
    graph = point_graph(2000, seed=7, dtype=torch.float32)
    previous = partial_eigh(graph, 8)
    moved = perturbed(graph, 0.01, seed=8)
    cold = partial_eigh(moved, 8)
    warm = partial_eigh(moved, 8, X0=previous.info.block)
    narrow = partial_eigh(moved, 8, X0=previous.eigenvectors)  # (B, N, k) is accepted too
    assert cold.info.converged and warm.info.converged and narrow.info.converged
    assert warm.info.iterations * 2 <= cold.info.iterations
    assert warm.info.matvecs * 2 <= cold.info.matvecs
    torch.testing.assert_close(warm.eigenvalues, cold.eigenvalues, rtol=1e-5, atol=1e-6)
    # An unchanged graph needs no filter iteration at all from its own block.
    again = partial_eigh(graph, 8, X0=previous.info.block)
    assert again.info.iterations == 0


def test_dense_method_agrees():
    graph = point_graph(200, seed=9)
    sparse = partial_eigh(graph, 5, tol=1e-11)
    dense = partial_eigh(graph, 5, method="dense")
    assert dense.info.method == "dense"
    torch.testing.assert_close(sparse.eigenvalues, dense.eigenvalues, atol=1e-12, rtol=0)
    torch.testing.assert_close(sparse.eigenvectors, dense.eigenvectors, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- on_fail and bad input


@pytest.fixture(scope="module")
def slow_graph():
    return point_graph(400, seed=11)


def test_on_fail_warn_names_the_residual(slow_graph):
    with pytest.warns(RuntimeWarning, match=r"relative residual \S+ > tol = 1e-12") as record:
        result = partial_eigh(slow_graph, 6, tol=1e-12, max_iter=1)
    assert not result.info.converged
    assert f"{result.info.max_residual:.3g}" in str(record[0].message)


def test_on_fail_raise(slow_graph):
    with pytest.raises(PartialEighNotConverged, match="relative residual"):
        partial_eigh(slow_graph, 6, tol=1e-12, max_iter=1, on_fail="raise")


def test_on_fail_dense_falls_back_below_the_limit(slow_graph):
    result = partial_eigh(slow_graph, 6, tol=1e-12, max_iter=1, on_fail="dense")
    assert result.info.method == "dense" and result.info.fallback
    exact = np.linalg.eigvalsh(laplacian_to_dense(slow_graph)[0].numpy())[:6]
    np.testing.assert_allclose(result.eigenvalues[0].numpy(), exact, atol=1e-12)
    with pytest.warns(RuntimeWarning, match="dense_limit = 100"):
        partial_eigh(slow_graph, 6, tol=1e-12, max_iter=1, on_fail="dense", dense_limit=100)


def test_on_fail_dense_is_the_dense_solve_forward_and_backward(slow_graph):
    k = 6
    g = torch.Generator().manual_seed(5)
    value_weights = torch.rand(1, k, generator=g, dtype=F64)
    vector_weights = torch.rand(1, slow_graph.num_nodes, k, generator=g, dtype=F64)
    fallback_grad, fallback = partial_gradient(
        slow_graph, "symmetric", k, value_weights, vector_weights, max_iter=1, on_fail="dense"
    )
    dense_grad, dense = partial_gradient(
        slow_graph, "symmetric", k, value_weights, vector_weights, method="dense"
    )
    assert fallback.info.fallback and fallback.info.converged
    assert torch.equal(fallback.eigenvalues, dense.eigenvalues)
    assert torch.equal(fallback.eigenvectors, dense.eigenvectors)
    torch.testing.assert_close(fallback_grad, dense_grad, atol=1e-10, rtol=1e-8)
    values, vectors = torch.linalg.eigh(laplacian_to_dense(slow_graph))
    torch.testing.assert_close(fallback.eigenvalues, values[:, :k], atol=1e-12, rtol=0)
    overlap = (fallback.eigenvectors.mT @ vectors[..., :k]).abs()  # same vectors up to sign
    torch.testing.assert_close(overlap, torch.eye(k, dtype=F64)[None], atol=1e-8, rtol=0)


def test_unconverged_pairs_are_finite_with_the_reported_residuals(slow_graph):
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = partial_eigh(slow_graph, 6, tol=1e-12, max_iter=1)
    values, vectors = result.eigenvalues, result.eigenvectors
    assert bool(torch.isfinite(values).all() and torch.isfinite(vectors).all())
    laplacian = laplacian_to_dense(slow_graph)
    residuals = (laplacian @ vectors - vectors * values.unsqueeze(1)).norm(dim=1) / 2.0
    torch.testing.assert_close(result.info.residuals, residuals, atol=1e-12, rtol=1e-6)
    assert result.info.max_residual == pytest.approx(float(residuals.max()), rel=1e-6)
    eye = torch.eye(6, dtype=F64)[None]
    torch.testing.assert_close(vectors.mT @ vectors, eye, atol=1e-10, rtol=0)


@pytest.fixture
def non_finite_iteration(monkeypatch):
    """Make the subspace iteration hand back NaN eigenpairs (a numerical breakdown)."""
    solve = partial_eigh_module._chebyshev_subspace_iteration

    def broken(*args, **kwargs):
        ritz = solve(*args, **kwargs)
        ritz.vectors = torch.full_like(ritz.vectors, float("nan"))
        ritz.residuals = torch.full_like(ritz.residuals, float("nan"))
        return ritz

    monkeypatch.setattr(partial_eigh_module, "_chebyshev_subspace_iteration", broken)


def test_non_finite_pairs_fall_back_to_dense_or_raise(slow_graph, non_finite_iteration):
    dense = partial_eigh(slow_graph, 4, method="dense")
    for on_fail in ("warn", "dense"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = partial_eigh(slow_graph, 4, on_fail=on_fail)
        assert result.info.fallback and torch.equal(result.eigenvectors, dense.eigenvectors)
        # "warn" says so; "dense" asked for the fallback and gets it silently.
        said = any("non-finite eigenpairs; solved densely" in str(w.message) for w in caught)
        assert said == (on_fail == "warn")
    with pytest.raises(PartialEighNotConverged, match="no dense fallback"):
        partial_eigh(slow_graph, 4, dense_limit=100)
    with pytest.raises(PartialEighNotConverged, match="non-finite eigenpairs"):
        partial_eigh(slow_graph, 4, on_fail="raise")


@pytest.mark.parametrize(("kind", "value"), [("unnormalized", 0.0), ("symmetric", 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_graph_without_edges(kind, value, dtype):
    """L = D - W = 0 once divided by its bound 2 max d = 0 (a ZeroDivisionError before)."""
    index = torch.arange(5).view(1, 5, 1).expand(1, 5, 2).contiguous()
    graph = NeighborGraph(index, torch.zeros(1, 5, 2, dtype=dtype))
    result = partial_eigh(graph, 3, kind)
    assert result.info.converged
    torch.testing.assert_close(result.eigenvalues, torch.full((1, 3), value, dtype=dtype))
    eye = torch.eye(3, dtype=dtype)[None]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(result.eigenvectors.mT @ result.eigenvectors, eye, atol=tol, rtol=0)


def test_bad_input_names_the_argument(slow_graph):
    n = slow_graph.num_nodes
    message = f"k must be an int in [1, N - 1] = [1, {n - 1}]"
    with pytest.raises(ValueError, match=re.escape(message)):
        partial_eigh(slow_graph, n)
    with pytest.raises(ValueError, match="k must be"):
        partial_eigh(slow_graph, 0)
    weight = slow_graph.weight.clone()
    graph = NeighborGraph(slow_graph.index, weight)
    weight[0, 0, 0] = -1.0  # in place, after the graph's own check
    with pytest.raises(ValueError, match="graph.weight must be >= 0"):
        partial_eigh(graph, 3)
    weight[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="graph.weight must be finite"):
        partial_eigh(graph, 3)
    with pytest.raises(ValueError, match="X0 must be"):
        partial_eigh(slow_graph, 3, X0=torch.zeros(1, n - 1, 3, dtype=F64))
    with pytest.raises(ValueError, match="backward must be one of"):
        partial_eigh(slow_graph, 3, backward="power_iteration")
    with pytest.raises(ValueError, match="on_fail must be one of"):
        partial_eigh(slow_graph, 3, on_fail="ignore")
    with pytest.raises(ValueError, match="tol must be"):
        partial_eigh(slow_graph, 3, tol=0.0)


# ---------------------------------------------------------------- backward


def linear_loss(values, vectors, value_weights, vector_weights):
    """Σ c λ + Σ R ∘ U²: invariant to eigenvector signs."""
    return (value_weights * values).sum() + (vector_weights * vectors.square()).sum()


def dense_gradient(graph, kind, k, mode, value_weights, vector_weights):
    """∂loss/∂weight through the dense Laplacian and cheeger.ops.eigh."""
    weight = graph.weight.detach().clone().requires_grad_(True)
    differentiable = NeighborGraph(graph.index, weight)
    solve_kind = "symmetric" if kind == "random_walk" else kind
    values, vectors = eigh(laplacian_to_dense(differentiable, solve_kind), k, backward=mode)
    if kind == "random_walk":
        scale = inverse_degree_power(differentiable, 0.5).unsqueeze(-1)
        vectors = canonicalize_eigenvector_signs(scale * vectors)
    loss = linear_loss(values, vectors, value_weights, vector_weights)
    return torch.autograd.grad(loss, weight)[0]


def partial_gradient(graph, kind, k, value_weights, vector_weights, **options):
    weight = graph.weight.detach().clone().requires_grad_(True)
    result = partial_eigh(NeighborGraph(graph.index, weight), k, kind, **options)
    loss = linear_loss(result.eigenvalues, result.eigenvectors, value_weights, vector_weights)
    return torch.autograd.grad(loss, weight)[0], result


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def small_graph():
    """Batch of two 150-node kNN graphs, connected, nondegenerate spectra."""
    return point_graph(150, seed=13, batch=2, k=6)


@pytest.mark.parametrize("kind", ["symmetric", "unnormalized", "random_walk"])
def test_gradient_matches_dense_exact_backward(small_graph, kind, device64):
    k = 6
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, k, generator=g, dtype=F64).to(device64)
    r = torch.randn(2, small_graph.num_nodes, k, generator=g, dtype=F64).to(device64)
    small_graph = NeighborGraph(small_graph.index.to(device64), small_graph.weight.to(device64))
    reference = dense_gradient(small_graph, kind, k, "exact", c, r)
    options = dict(tol=1e-12, backward="exact", backward_tol=1e-12)
    ours, result = partial_gradient(small_graph, kind, k, c, r, **options)
    assert result.info.backward_iterations > 0
    complete = relative_error(ours, reference)
    assert complete < 1e-8
    truncated, _ = partial_gradient(small_graph, kind, k, c, r, out_of_subspace=False, **options)
    assert relative_error(truncated, reference) > max(1e-2, 1e4 * complete)
    # backward="topk" is the truncated gradient with the lorentzian in-subspace coupling.
    topk, _ = partial_gradient(small_graph, kind, k, c, r, tol=1e-12, backward="topk")
    lorentzian, _ = partial_gradient(small_graph, kind, k, c, r, tol=1e-12, out_of_subspace=False)
    torch.testing.assert_close(topk, lorentzian, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["lorentzian", "clamp", "taylor", "pade"])
def test_regularised_modes_match_dense_modes(small_graph, mode):
    k = 5
    g = torch.Generator().manual_seed(1)
    c = torch.randn(2, k, generator=g, dtype=F64)
    r = torch.randn(2, small_graph.num_nodes, k, generator=g, dtype=F64)
    reference = dense_gradient(small_graph, "symmetric", k, mode, c, r)
    options = dict(tol=1e-12, backward_tol=1e-12)
    if mode != "lorentzian":  # lorentzian is the default
        options["backward"] = mode
    ours, _ = partial_gradient(small_graph, "symmetric", k, c, r, **options)
    # The dense modes also damp the pairs outside the block, where partial_eigh solves
    # exactly; at these gaps that changes the gradient by less than 1e-3.
    assert relative_error(ours, reference) < 1e-3


def test_gradcheck_through_symmetric_edge_weights():
    """Finite differences of a function of the undirected edge weights: each edge feeds
    both of its slots, so this checks the symmetric-storage chain rule end to end."""
    rng = np.random.default_rng(17)
    dense = components_dense(rng, [24])[None]
    graph = graph_from_dense(dense, extra=0)
    rows, cols = np.nonzero(np.triu(dense[0]))
    edge_of_slot = torch.full(graph.index.shape, -1, dtype=torch.int64)
    for e, (i, j) in enumerate(zip(rows, cols, strict=True)):
        for a, b in ((i, j), (j, i)):
            slot = int(
                np.flatnonzero((graph.index[0, a] == b).numpy() & (graph.weight[0, a] > 0).numpy())[
                    0
                ]
            )
            edge_of_slot[0, a, slot] = e
    edges = torch.from_numpy(dense[0][rows, cols]).requires_grad_(True)
    mask = edge_of_slot >= 0
    g = torch.Generator().manual_seed(2)
    c = torch.randn(1, 3, generator=g, dtype=F64)
    r = torch.randn(1, 24, 3, generator=g, dtype=F64)

    def loss(edge_weights):
        padded = torch.cat([edge_weights, edge_weights.new_zeros(1)])
        weight = torch.where(mask, padded[edge_of_slot.clamp_min(0)], 0.0)
        result = partial_eigh(
            NeighborGraph(graph.index, weight),
            3,
            tol=1e-13,
            backward_tol=1e-13,
            backward="exact",
        )
        return linear_loss(result.eigenvalues, result.eigenvectors, c, r)

    assert torch.autograd.gradcheck(loss, (edges,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("num_components", [3, 9])
def test_gradients_finite_on_disconnected_graphs(num_components):
    """Repeated eigenvalue 0 inside the block (3 components, k = 5) and across the cut
    (9 components, k = 5). Lorentzian keeps both finite; inside the block the loss is a
    function of the zero eigenspace only, and the gradient matches the dense one."""
    rng = np.random.default_rng(num_components)
    graph = graph_from_dense(
        components_dense(rng, list(rng.integers(8, 20, num_components)))[None], extra=0
    )
    k = 5
    n = graph.num_nodes
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, k, generator=g, dtype=F64)
    r = torch.randn(1, n, k, generator=g, dtype=F64)
    ours, result = partial_gradient(graph, "symmetric", k, c, r, tol=1e-10)
    assert bool(torch.isfinite(ours).all())
    assert float(ours.abs().max()) < 1e4  # lorentzian bounds |F| by 1/(2 eps) = 5e3
    if num_components < k:
        # Loss on the projector onto the zero eigenspace: basis-free.
        d = torch.randn(1, n, generator=g, dtype=F64)

        def projector_loss(values, vectors):
            zero = vectors[..., :num_components]
            return (d * zero.square().sum(-1)).sum() + values.sum()

        weight = graph.weight.detach().clone().requires_grad_(True)
        res = partial_eigh(NeighborGraph(graph.index, weight), k, tol=1e-10)
        ours = torch.autograd.grad(projector_loss(*res[:2]), weight)[0]
        weight = graph.weight.detach().clone().requires_grad_(True)
        values, vectors = eigh(laplacian_to_dense(NeighborGraph(graph.index, weight)), k)
        reference = torch.autograd.grad(projector_loss(values, vectors), weight)[0]
        assert relative_error(ours, reference) < 1e-6


def test_float32_gradient_agrees_with_float64(small_graph):
    k = 6
    g = torch.Generator().manual_seed(4)
    c = torch.randn(2, k, generator=g, dtype=F64)
    r = torch.randn(2, small_graph.num_nodes, k, generator=g, dtype=F64)
    reference, _ = partial_gradient(small_graph, "symmetric", k, c, r)
    single = NeighborGraph(small_graph.index, small_graph.weight.float())
    ours, result = partial_gradient(single, "symmetric", k, c.float(), r.float())
    assert result.info.converged
    assert relative_error(ours.double(), reference) < 1e-2


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 12), min_size=1, max_size=6),
    k=st.integers(1, 8),
    kind=st.sampled_from(["symmetric", "unnormalized", "random_walk"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_components_eigenvalues_and_finite_gradients(sizes, k, kind, seed):
    """Random unions of components (repeated eigenvalue 0, possibly across the cut)."""
    rng = np.random.default_rng(seed)
    dense = components_dense(rng, sizes)[None]
    n = dense.shape[-1]
    k = min(k, n - 1)
    graph = graph_from_dense(dense, extra=0)
    weight = graph.weight.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CG cap when zeros overflow the block
        result = partial_eigh(NeighborGraph(graph.index, weight), k, kind, tol=1e-10)
        loss = result.eigenvalues.sum() + result.eigenvectors.square()[..., 0, :].sum()
        (grad,) = torch.autograd.grad(loss, weight)
    exact = np.linalg.eigvalsh(
        laplacian_to_dense(graph, "symmetric" if kind == "random_walk" else kind)[0].numpy()
    )
    np.testing.assert_allclose(result.eigenvalues[0].detach().numpy(), exact[:k], atol=1e-8)
    assert bool(torch.isfinite(grad).all())
