"""Solvers: one filter road, the same h(L) X whatever the solver, for every Laplacian."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cheeger.models.response import HeatResponse, TemperResponse
from cheeger.models.solvers import ChebyshevSolver, DenseSolver, NystromSolver, PartialSolver
from cheeger.ops.grid import grid_graph
from cheeger.ops.laplacian import LAPLACIAN_KINDS, laplacian_to_dense
from cheeger.ops.partial_eigh import partial_eigh

F64 = torch.float64
K = 6


def random_grid_graph(seed: int = 0):
    """A connected 8-neighbour graph on a 6 x 7 grid with random bilateral weights."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(1, 3, 6, 7, generator=g, dtype=F64)
    return grid_graph(features, 1, 1.5)


def oracle_eigenvectors(graph, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """numpy eigenpairs of the Laplacian: L v = λ v for every kind (v = D^-1/2 u for
    random_walk, u those of L_sym)."""
    symmetric_kind = "symmetric" if kind == "random_walk" else kind
    dense = laplacian_to_dense(graph, symmetric_kind)[0].numpy()
    values, vectors = np.linalg.eigh(dense)
    if kind == "random_walk":
        degrees = graph.weight.sum(-1)[0].numpy()
        vectors = vectors / np.sqrt(degrees)[:, None]
    return values, vectors


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_dense_lanczos_and_chebyshev_give_the_same_filter(kind):
    # A signal in the span of the K lowest eigenvectors, X = V C, has h(L) X = V h(Λ) C for
    # every kind (L_rw V = V Λ), so eigenpair solvers that keep K pairs are exact on it and
    # a Chebyshev polynomial of high order approximates it over the whole spectrum.
    graph = random_grid_graph()
    values, vectors = oracle_eigenvectors(graph, kind)
    rng = np.random.default_rng(1)
    coefficients = rng.standard_normal((K, 3))
    signal = torch.from_numpy(vectors[:, :K] @ coefficients).unsqueeze(0)
    response = HeatResponse(t=1.0).double()
    h = np.exp(-1.0 * values[:K])
    expected = vectors[:, :K] @ (h[:, None] * coefficients)
    solvers = {
        "dense": DenseSolver(k=K),
        "lanczos": PartialSolver(k=K, tol=1e-11, max_iter=2000),
        "chebyshev": ChebyshevSolver(order=60),
    }
    for name, solver in solvers.items():
        filtered, info = solver.filter(graph, signal, response, kind)
        np.testing.assert_allclose(filtered[0].numpy(), expected, atol=1e-6, rtol=0, err_msg=name)
        if name == "chebyshev":
            assert info.eigenvalues is None and info.iterations == 59
        else:
            np.testing.assert_allclose(info.eigenvalues[0].numpy(), values[:K], atol=1e-8)
            np.testing.assert_allclose(info.response[0].numpy(), h, atol=1e-8)


def test_random_walk_filter_is_d_weighted_on_the_eigenvectors():
    # The eigenpair road applies V h Vᵀ D X (V = D^-1/2 U, D-orthonormal), which is
    # D^-1/2 U h Uᵀ D^1/2 X; V h Vᵀ X, which drops a D, is not h(L_rw) X. Checked on an
    # arbitrary X with N - 1 pairs against the dense formula on the same N - 1 pairs.
    graph = random_grid_graph(2)
    num_nodes = graph.num_nodes
    lsym = laplacian_to_dense(graph, "symmetric")[0].numpy()
    values, vectors = np.linalg.eigh(lsym)
    values, vectors = values[:-1], vectors[:, :-1]
    root = np.sqrt(graph.weight.sum(-1)[0].numpy())[:, None]
    x = np.random.default_rng(3).standard_normal((num_nodes, 2))
    h = (1 - values / 2) ** 3
    expected = ((vectors * h) @ (vectors.T @ (root * x))) / root
    filtered, _ = DenseSolver(k=num_nodes - 1).filter(
        graph, torch.from_numpy(x).unsqueeze(0), TemperResponse(3.0).double(), "random_walk"
    )
    np.testing.assert_allclose(filtered[0].numpy(), expected, atol=1e-10, rtol=0)


def test_chebyshev_is_exact_on_the_null_space():
    # A constant on a connected graph is L_rw's null space: h(0) times it, exactly, even
    # at an order too low to fit h well elsewhere.
    graph = random_grid_graph(4)
    constant = torch.full((1, graph.num_nodes, 2), 3.0, dtype=F64)
    response = HeatResponse(t=6.0).double()
    for kind in ("random_walk", "unnormalized"):
        filtered, _ = ChebyshevSolver(order=3).filter(graph, constant, response, kind)
        torch.testing.assert_close(filtered, constant, atol=1e-12, rtol=0)


def test_gate_scales_the_response_per_eigenpair():
    graph = random_grid_graph(5)
    signal = torch.randn(1, graph.num_nodes, 2, dtype=F64)
    response = TemperResponse(1.0).double()
    plain, info = DenseSolver(k=K).filter(graph, signal, response, "symmetric")
    gated, gated_info = DenseSolver(k=K).filter(
        graph,
        signal,
        response,
        "symmetric",
        gate=lambda values, vectors: 0.5 * torch.ones_like(values),
    )
    torch.testing.assert_close(gated, 0.5 * plain)
    torch.testing.assert_close(gated_info.response, 0.5 * info.response)
    with pytest.raises(ValueError, match="solver=chebyshev.*gate"):
        ChebyshevSolver().filter(graph, signal, response, "symmetric", gate=lambda v, u: v)


def test_nystrom_reads_the_graphs_features_and_refuses_a_graph_without():
    graph = random_grid_graph(6)
    signal = torch.randn(1, graph.num_nodes, 2, dtype=F64)
    with pytest.raises(ValueError, match="node_features"):
        NystromSolver(k=4, num_landmarks=16).filter(
            graph, signal, TemperResponse().double(), "symmetric"
        )
    with pytest.raises(ValueError, match="num_landmarks >= k"):
        NystromSolver(k=8, num_landmarks=4)


def test_solver_options_are_checked_where_they_enter():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"k \(solver.k\) must be an int >= 1"):
            DenseSolver(k=bad)
    with pytest.raises(ValueError, match="solver.order"):
        ChebyshevSolver(order=0)
    with pytest.raises(ValueError, match="solver=lanczos with k=6 .* found N = 6"):
        PartialSolver(k=6).check_num_nodes(6)
    with pytest.raises(ValueError, match="solver.max_nodes=10"):
        DenseSolver(k=2, max_nodes=10).check_num_nodes(11)


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: PartialSolver(on_fail="ignore"), "on_fail"),
        (lambda: PartialSolver(backward="none"), "backward"),
        (lambda: DenseSolver(backward="topk_approx"), "backward"),
        (lambda: NystromSolver(kernel="laplace"), "kernel"),
        (lambda: NystromSolver(landmarks="grid"), "landmarks"),
    ],
)
def test_bad_solver_strings_fail_at_construction(build, key):
    with pytest.raises(ValueError, match=f"solver.{key} must be one of"):
        build()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("tol", 0, "solver.tol must be a finite number > 0; found 0"),
        ("tol", "abc", "solver.tol must be a finite number > 0; found 'abc'"),
        ("backward_tol", -1e-3, "solver.backward_tol must be a finite number > 0"),
        ("max_iter", -1, "solver.max_iter must be an int >= 0; found -1"),
        ("max_iter", 2.5, "solver.max_iter must be an int >= 0; found 2.5"),
        ("backward_max_iter", 0, "solver.backward_max_iter must be an int >= 1"),
        ("degree", 0, "solver.degree must be an int >= 1; found 0"),
        ("guard", -2, "solver.guard must be an int >= 0; found -2"),
        ("dense_limit", 0, "solver.dense_limit must be an int >= 1"),
        ("eps", float("nan"), "solver.eps must be a finite number >= 0; found nan"),
        ("out_of_subspace", 1, "solver.out_of_subspace must be true or false; found 1"),
    ],
)
def test_partial_solver_numbers_fail_at_construction_by_config_key(option, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PartialSolver(**{option: value})


def test_partial_eigh_applies_the_same_rule_without_the_prefix():
    graph = grid_graph(torch.rand(1, 3, 6, 6, dtype=torch.float64), 1, 0.5)
    with pytest.raises(ValueError, match=re.escape("degree must be an int >= 1; found 0")):
        partial_eigh(graph, 2, degree=0)
    # Options are normalised once: the solver passes partial_eigh what it checked.
    solver = PartialSolver(k=2, tol=1e-6, max_iter=50)
    values = solver.eigenpairs(graph, "symmetric").eigenvalues
    expected = partial_eigh(graph, 2, tol=1e-6, max_iter=50).eigenvalues
    torch.testing.assert_close(values, expected)


def test_the_run_config_loosens_only_the_backward_tolerance(compose_train):
    # The library solves the backward to the forward tol; runs use the measured 1e-2
    # (experiments/results/bench_backward_tol.md), and null restores the library rule.
    from hydra.utils import instantiate

    assert PartialSolver(k=2).options["backward_tol"] is None
    configured = instantiate(compose_train("head=spectral").solver)
    assert configured.options["backward_tol"] == 1e-2 and configured.options["tol"] is None
    exact = instantiate(compose_train("head=spectral", "solver.backward_tol=null").solver)
    assert exact.options["backward_tol"] is None
