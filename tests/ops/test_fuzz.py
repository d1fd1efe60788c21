"""Property-based tests of the spectral ops on random, degenerate and badly scaled inputs.

Graphs: 2 to 16 nodes, isolated nodes, several components, complete graphs, cycles and
stars (repeated eigenvalues, exactly or up to a jitter of 1e-9 to 1e-3), weights
spanning 1e-8 to 1e8; point clouds with duplicate and zero rows; float32 and float64.
Every property is checked against an independent computation in float64 (dense
Laplacians, torch.linalg.eigh, the filter's own polynomial evaluated on the spectrum).
Each test runs under the fast profile in ``make test`` and the extended one in
``make test-slow`` (profiles in tests/ops/strategies.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from cheeger.ops.backward_modes import BACKWARD_MODES, gap_reciprocal_sup
from cheeger.ops.chebyshev import chebyshev_coefficients, chebyshev_filter
from cheeger.ops.eigh import eigh
from cheeger.ops.graph import NeighborGraph, degree, to_dense, validate_graph
from cheeger.ops.grid import grid_graph
from cheeger.ops.knn import knn_graph
from cheeger.ops.laplacian import (
    LAPLACIAN_KINDS,
    lambda_max_bound,
    laplacian_matvec,
    laplacian_to_dense,
)
from cheeger.ops.partial_eigh import PARTIAL_BACKWARD_MODES, partial_eigh
from tests.ops.strategies import GraphCase, graph_cases, point_clouds, property_test, spectra
from tests.ops.test_grid import dense_window_graph

F64 = torch.float64


def unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def spectrum_scale(graph: NeighborGraph, kind: str) -> float:
    """The a-priori bound on λ_max (1 for L = 0): the unit of every tolerance below."""
    bound = float(lambda_max_bound(graph, kind)[0])
    return bound if bound > 0 else 1.0


def isolated_nodes(graph: NeighborGraph) -> np.ndarray:
    """Nodes the normalised Laplacians treat as isolated: degree <= the dtype's epsilon."""
    return (degree(graph)[0] <= unit_roundoff(graph.weight.dtype)).numpy()


def finite_gradient(output: torch.Tensor, leaf: torch.Tensor, label: str = "") -> torch.Tensor:
    """d output / d leaf, asserted finite."""
    (grad,) = torch.autograd.grad(output, leaf)
    assert bool(torch.isfinite(grad).all()), label
    return grad


def symmetric_eigenvalues(matrix: torch.Tensor) -> torch.Tensor:
    matrix = matrix.to(F64)
    return torch.linalg.eigvalsh(0.5 * (matrix + matrix.mT))


# ---------------------------------------------------------------- Laplacians


def check_laplacian_invariants(case: GraphCase) -> None:
    graph, dtype, n = case.graph, case.dtype, case.num_nodes
    isolated = isolated_nodes(graph)
    x = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)
    for kind in LAPLACIAN_KINDS:
        scale = spectrum_scale(graph, kind)
        tol = 64 * n * unit_roundoff(dtype) * scale
        lap = laplacian_to_dense(graph, kind)[0]
        assert bool(torch.isfinite(lap).all()), kind
        product = laplacian_matvec(graph, x, kind)[0]
        assert float((product - lap @ x[0]).abs().max()) <= tol * float(x.abs().max()), kind
        lap = lap.to(F64)
        skip = torch.zeros(n, dtype=torch.bool)
        if kind == "unnormalized":  # L 1 = 0 on every row
            null, defect = torch.ones(n, dtype=F64), torch.zeros(n, dtype=F64)
        else:
            # L_sym D^1/2 1 = 0 and L_rw 1 = 0, with the entries of isolated nodes (degree
            # <= eps, whose D^-1/2 is 0) set to 0. A node with an edge to an isolated one
            # keeps that weight in its degree: its entry is off by that weight over d^1/2
            # (symmetric) or d (random walk); 0 when no such edge exists.
            d = degree(graph)[0].to(F64)
            mask = skip = torch.from_numpy(isolated)
            to_isolated = (to_dense(graph)[0].to(F64) * mask).sum(-1)
            power = 0.5 if kind == "symmetric" else 1.0
            null = (d.sqrt() if kind == "symmetric" else torch.ones(n, dtype=F64)).masked_fill(
                mask, 0.0
            )
            defect = (to_isolated / d.clamp_min(1e-300) ** power).masked_fill(mask, 0.0)
            # An isolated node's row is the identity row: eigenvalue 1, not 0.
            assert torch.equal(lap[isolated], torch.eye(n, dtype=F64)[isolated]), kind
        residual = (lap @ null - defect).masked_fill(skip, 0.0)
        assert float(residual.abs().max()) <= tol * max(1.0, float(null.abs().max())), kind
        if kind == "random_walk":
            continue  # not symmetric; same spectrum as "symmetric"
        assert float((lap - lap.mT).abs().max()) <= tol, kind
        values = symmetric_eigenvalues(lap)
        assert float(values[0]) >= -tol and float(values[-1]) <= scale + tol, kind
        if case.moderate and dtype == F64:
            # Eigenvalue 0 once per component (L), per component with an edge (L_sym).
            components = connected_components(case.dense > 0, directed=False)[1]
            sizes = np.bincount(components)
            expected = len(sizes) if kind == "unnormalized" else int((sizes > 1).sum())
            assert int((values <= 1e-9 * scale).sum()) == expected, kind


test_laplacian_invariants = property_test(check_laplacian_invariants, case=graph_cases())


# ---------------------------------------------------------------- partial_eigh


def eigen_loss(values: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Σ c λ + Σ R ∘ U² with fixed positive c, R: invariant to eigenvector signs."""
    c = torch.linspace(1.0, 2.0, values.shape[-1], dtype=values.dtype)
    r = torch.linspace(0.5, 1.0, vectors.shape[-2] * vectors.shape[-1], dtype=vectors.dtype)
    return (c * values).sum() + (r.view(vectors.shape[-2:]) * vectors.square()).sum()


def check_partial_eigh(case: GraphCase, kind: str, fraction: float) -> None:
    graph, dtype, n = case.graph, case.dtype, case.num_nodes
    k = 1 + int(fraction * (n - 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = partial_eigh(graph, k, kind)
    values, vectors, info = result
    assert bool(torch.isfinite(values).all() and torch.isfinite(vectors).all())
    if not info.converged:  # allowed, but never silently
        assert any("did not converge" in str(w.message) for w in caught)
        return
    solve_kind = "symmetric" if kind == "random_walk" else kind
    scale = spectrum_scale(graph, solve_kind)
    lap = laplacian_to_dense(graph, solve_kind)[0].to(F64)
    slack = 100 * n * unit_roundoff(dtype)
    assert info.max_residual <= info.tol
    if kind != "random_walk":
        u = vectors[0].to(F64)
        residuals = (lap @ u - u * values[0].to(F64)).norm(dim=0) / scale
        assert float(residuals.max()) <= 2 * info.tol + slack
        eye = torch.eye(k, dtype=F64)
        assert float((u.mT @ u - eye).abs().max()) <= slack
    # Each converged Ritz value is within its residual of an eigenvalue, and the block
    # must not have skipped one: the k smallest eigenvalues of the same matrix.
    exact = symmetric_eigenvalues(lap)[:k]
    error = (values[0].to(F64) - exact).abs().max()
    assert float(error) <= (2 * info.tol + slack) * scale, (values, exact)


test_partial_eigh_residuals_and_eigenvalues = property_test(
    check_partial_eigh,
    case=graph_cases(),
    kind=st.sampled_from(LAPLACIAN_KINDS),
    fraction=st.floats(0.0, 1.0),
)


def check_partial_eigh_gradients(case: GraphCase, kind: str, fraction: float) -> None:
    graph, n = case.graph, case.num_nodes
    k = 1 + int(fraction * (n - 2))
    for mode in PARTIAL_BACKWARD_MODES:
        if mode == "exact":
            continue
        weight = graph.weight.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # convergence caps, tested above
            values, vectors, _ = partial_eigh(
                NeighborGraph(graph.index, weight), k, kind, backward=mode
            )
            finite_gradient(eigen_loss(values, vectors), weight, mode)


test_partial_eigh_gradients_finite_in_every_regularised_mode = property_test(
    check_partial_eigh_gradients,
    case=graph_cases(max_nodes=10),
    kind=st.sampled_from(LAPLACIAN_KINDS),
    fraction=st.floats(0.0, 1.0),
)


# ---------------------------------------------------------------- dense eigh


def check_eigh(spectrum: tuple[torch.Tensor, np.ndarray], fraction: float, largest: bool) -> None:
    matrix, expected = spectrum
    dtype, n = matrix.dtype, matrix.shape[-1]
    k = 1 + int(fraction * (n - 1))
    norm = float(np.abs(expected).max()) or 1.0
    slack = 100 * n * unit_roundoff(dtype) * norm
    values, vectors = eigh(matrix, k, largest=largest)
    a, u, lam = matrix.to(F64), vectors.to(F64), values.to(F64)
    assert float((a @ u - u * lam).abs().max()) <= slack
    assert float((u.mT @ u - torch.eye(k, dtype=F64)).abs().max()) <= slack / norm
    want = expected[::-1][:k].copy() if largest else expected[:k]
    np.testing.assert_allclose(lam.numpy(), want, atol=slack, rtol=0)
    # Every bounded mode: ||gA||_F <= ||gλ|| + sup|F| ||gU||_F (U orthonormal, |F| <= sup).
    for mode in BACKWARD_MODES:
        if mode == "exact":
            continue
        a = matrix.clone().requires_grad_(True)
        values, vectors = eigh(a, k, largest=largest, backward=mode)
        c = torch.linspace(1.0, 2.0, k, dtype=dtype)
        loss = (c * values).sum() + vectors.square().sum()
        grad = finite_gradient(loss, a, mode)
        grad_vectors = 2.0 * vectors.detach().to(F64)
        bound = float(c.to(F64).norm()) + gap_reciprocal_sup(mode, 1e-4) * float(
            grad_vectors.norm()
        )
        assert float(grad.to(F64).norm()) <= bound * (1 + 1e-3) + slack, mode


test_eigh_on_degenerate_spectra = property_test(
    check_eigh, spectrum=spectra(), fraction=st.floats(0, 1), largest=st.booleans()
)


# ---------------------------------------------------------------- Chebyshev filters


def check_chebyshev_filter(case: GraphCase, kind: str, order: int, time: float) -> None:
    """||p(L) X - h(L) X||_F <= max_i |p(λ_i) - h(λ_i)| ||X||_F, plus rounding."""
    graph, dtype, n = case.graph, case.dtype, case.num_nodes
    lambda_max = spectrum_scale(graph, kind)

    def heat(lam):
        return torch.exp(-time * lam / lambda_max)

    theta = chebyshev_coefficients(heat, order, lambda_max)  # float64
    x = torch.randn(1, n, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = chebyshev_filter(graph, x.to(dtype), theta.to(dtype), kind, lambda_max).to(F64)
    lam, u = torch.linalg.eigh(laplacian_to_dense(graph, kind)[0].to(F64))
    exact = u @ (heat(lam).unsqueeze(-1) * (u.mT @ x[0]))
    polynomial = np.polynomial.chebyshev.chebval(2 * lam.numpy() / lambda_max - 1, theta.numpy())
    approximation = float(np.abs(polynomial - heat(lam).numpy()).max())
    rounding = 10 * order**2 * unit_roundoff(dtype) * float(theta.abs().sum())
    bound = (approximation + rounding) * float(x.norm())
    assert float((got[0] - exact).norm()) <= bound


test_chebyshev_filter_within_its_approximation_error = property_test(
    check_chebyshev_filter,
    case=graph_cases(),
    kind=st.sampled_from(["symmetric", "unnormalized"]),
    order=st.integers(1, 30),
    time=st.floats(0.1, 10.0),
)


# ---------------------------------------------------------------- kNN and grid graphs


def check_knn_graph(features: torch.Tensor, fraction: float, affinity: str, mode: str) -> None:
    dtype, n = features.dtype, features.shape[1]
    k = 1 + int(fraction * (n - 2))
    spread = float(features.abs().max()) or 1.0
    options = {"sigma": 0.5 * spread} if affinity == "gaussian" else {"scale_neighbor": 1}
    features = features.clone().requires_grad_(True)
    graph = knn_graph(features, k, affinity=affinity, mode=mode, **options)
    validate_graph(graph, check_symmetric=True)
    weight = graph.weight.detach()
    assert float(weight.min()) >= 0 and float(weight.max()) <= 1 + 4 * unit_roundoff(dtype)
    own = torch.arange(n).view(1, n, 1)
    assert not bool((weight[graph.index == own] > 0).any())  # no self-loops
    # Copies: distance 0, weight exactly 1 (gaussian, self-tuning) or cosine 1 up to
    # rounding; a zero row has cosine 0 with everything, so no edge under "clamp".
    x = features.detach()[0]
    same = (x[:, None, :] == x[graph.index[0]]).all(-1) & (graph.index[0] != own[0])
    zero = (x == 0).all(-1)
    if affinity == "cosine":
        copies = weight[0][same & ~zero[:, None]]
        assert bool((copies >= 1 - 8 * x.shape[-1] * unit_roundoff(dtype)).all())
        assert not bool((weight[0][zero] > 0).any())
    else:
        assert torch.equal(weight[0][same], torch.ones_like(weight[0][same]))
    finite_gradient(graph.weight.sum(), features)


test_knn_graph_with_duplicate_points = property_test(
    check_knn_graph,
    features=point_clouds(),
    fraction=st.floats(0.0, 1.0),
    affinity=st.sampled_from(["gaussian", "self_tuning", "cosine"]),
    mode=st.sampled_from(["union", "mutual"]),
)


def check_grid_graph(features: torch.Tensor, height: int, radius: int, spatial: bool) -> None:
    """Flat regions (equal features) and any scale: the bilateral window weights."""
    dtype, n = features.dtype, features.shape[1]
    height = min(height, n)
    values = features[0, : height * (n // height)]
    image = values.reshape(1, height, -1, values.shape[-1]).permute(0, 3, 1, 2).contiguous()
    sigma_feature = 0.5 * (float(image.abs().max()) or 1.0)
    sigma_spatial = 1.5 if spatial else None
    image = image.requires_grad_(True)
    graph = grid_graph(image, radius, sigma_feature, sigma_spatial)
    validate_graph(graph, check_symmetric=True)
    expected = dense_window_graph(
        image.detach().to(F64).numpy(), radius, sigma_feature, sigma_spatial, "square"
    )
    dense = torch.zeros(1, graph.num_nodes, graph.num_nodes, dtype=F64)
    dense.scatter_add_(2, graph.index, graph.weight.detach().to(F64))
    np.testing.assert_allclose(dense.numpy(), expected, atol=100 * unit_roundoff(dtype), rtol=0)
    finite_gradient(graph.weight.sum(), image)


test_grid_graph_with_flat_regions = property_test(
    check_grid_graph,
    features=point_clouds(max_points=24),
    height=st.integers(1, 3),
    radius=st.integers(1, 2),
    spatial=st.booleans(),
)
