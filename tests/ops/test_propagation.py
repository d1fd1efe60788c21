"""PageRank label propagation against its closed form and its spectral response."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.ops.graph import NeighborGraph, to_dense
from cheeger.ops.grid import grid_graph
from cheeger.ops.laplacian import laplacian_to_dense
from cheeger.ops.propagation import pagerank_propagate

F64 = torch.float64


def image_graph(seed=0):
    g = torch.Generator().manual_seed(seed)
    return grid_graph(torch.randn(2, 3, 5, 6, generator=g, dtype=F64), 1, 1.0)


def test_converges_to_the_resolvent():
    graph = image_graph()
    p = torch.rand(2, 30, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    beta = 0.9
    q = pagerank_propagate(graph, p, beta, 400)
    for b in range(2):
        w = to_dense(graph)[b].numpy()
        transition = w / w.sum(-1, keepdims=True)
        expected = (1 - beta) * np.linalg.solve(np.eye(30) - beta * transition, p[b].numpy())
        np.testing.assert_allclose(q[b].numpy(), expected, atol=1e-12, rtol=0)


def test_is_the_spectral_filter_of_the_random_walk_laplacian():
    # q = h(L_rw) p with h(λ) = (1 - β) / (1 - β + β λ), through L_sym's eigenpairs.
    graph = image_graph(2)
    p = torch.rand(2, 30, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    beta = 0.7
    q = pagerank_propagate(graph, p, beta, 200)
    lsym = laplacian_to_dense(graph, "symmetric").numpy()
    root = np.sqrt(graph.weight.sum(-1).numpy())
    for b in range(2):
        values, vectors = np.linalg.eigh(lsym[b])
        h = (1 - beta) / (1 - beta + beta * values)
        expected = (vectors * h) @ vectors.T @ (root[b, :, None] * p[b].numpy()) / root[b, :, None]
        np.testing.assert_allclose(q[b].numpy(), expected, atol=1e-10, rtol=0)


def test_keeps_probabilities_and_isolated_nodes():
    graph = image_graph(4)
    weight = graph.weight.clone()
    weight[:, 7] = 0.0  # cut node 7 off (both directions)
    weight[graph.index == 7] = 0.0
    graph = NeighborGraph(graph.index, weight)
    p = torch.rand(2, 30, 3, dtype=F64, generator=torch.Generator().manual_seed(5)).softmax(-1)
    q = pagerank_propagate(graph, p, 0.95, 30)
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 30, dtype=F64))
    assert bool((q >= 0).all())
    torch.testing.assert_close(q[:, 7], p[:, 7])
    torch.testing.assert_close(pagerank_propagate(graph, p, 0.95, 0), p)


def test_differentiable_in_weights_and_signal():
    graph = image_graph(6)
    weight = graph.weight[:1].detach().clone().requires_grad_(True)
    p = torch.rand(1, 30, 2, dtype=F64, requires_grad=True)

    def run(w, x):
        return pagerank_propagate(NeighborGraph(graph.index[:1], w), x, 0.8, 5)

    # Perturbing weights must keep them symmetric and >= 0: gradcheck on the signal only,
    # and a finite, non-zero weight gradient.
    assert torch.autograd.gradcheck(lambda x: run(weight.detach(), x), (p,))
    run(weight, p.detach()).square().sum().backward()
    assert weight.grad is not None and float(weight.grad.abs().max()) > 0


@pytest.mark.parametrize("beta, iterations", [(1.0, 3), (-0.1, 3), (0.5, -1), (0.5, 2.5)])
def test_bad_arguments_are_named(beta, iterations):
    graph = image_graph()
    with pytest.raises(ValueError, match="beta|iterations"):
        pagerank_propagate(graph, torch.rand(2, 30, 1, dtype=F64), beta, iterations)
