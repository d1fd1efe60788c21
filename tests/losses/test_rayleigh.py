"""Rayleigh consistency against hand values, dense Laplacians and the L_sym null space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.losses import RayleighConsistency
from cheeger.losses.rayleigh import rayleigh_quotient
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.laplacian import LAPLACIAN_KINDS, laplacian_to_dense
from tests.ops.spectra import graph_from_dense

DTYPE = torch.float64


def path_graph() -> NeighborGraph:
    """Nodes 0 - 1 - 2 with weights 1 and 2 (degrees 1, 3, 2)."""
    dense = np.array([[[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 0.0]]])
    return graph_from_dense(dense)


P_PATH = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]], dtype=DTYPE)


def test_hand_computed_on_a_path():
    # Dirichlet energy: 1 * |P0 - P1|^2 + 2 * |P1 - P2|^2 = 1 * 0.5 + 2 * 0.5 = 1.5
    # tr(P^T P) = 1 + 0.5 + 1 = 2.5; tr(P^T D P) = 1 * 1 + 3 * 0.5 + 2 * 1 = 4.5
    graph = path_graph()
    assert rayleigh_quotient(graph, P_PATH, "unnormalized").item() == pytest.approx(1.5 / 2.5)
    assert rayleigh_quotient(graph, P_PATH, "symmetric").item() == pytest.approx(1.5 / 4.5)
    assert rayleigh_quotient(graph, P_PATH, "random_walk").item() == pytest.approx(1.5 / 4.5)


def random_graph(rng: np.random.Generator, batch: int, n: int) -> NeighborGraph:
    upper = np.triu(rng.uniform(0.1, 2.0, (batch, n, n)) * (rng.random((batch, n, n)) < 0.4), 1)
    return graph_from_dense(upper + upper.transpose(0, 2, 1))


def random_probabilities(rng: np.random.Generator, batch: int, n: int, c: int) -> torch.Tensor:
    return torch.softmax(torch.from_numpy(rng.standard_normal((batch, n, c))), dim=-1)


def dense_quotient(graph: NeighborGraph, p: torch.Tensor, kind: str) -> torch.Tensor:
    """The quotients written with the dense Laplacian of each kind, (B,)."""
    lap = laplacian_to_dense(graph, kind)
    d = torch.diag_embed(to_degrees(graph))
    trace = lambda a, b: torch.einsum("bnc,bnc->b", a, b)  # noqa: E731
    if kind == "unnormalized":
        return trace(p, lap @ p) / trace(p, p)
    if kind == "symmetric":
        q = d.sqrt() @ p
        return trace(q, lap @ q) / trace(q, q)
    return trace(p, d @ lap @ p) / trace(p, d @ p)


def to_degrees(graph: NeighborGraph) -> torch.Tensor:
    return graph.weight.sum(-1)


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_equals_dense_computation(kind):
    rng = np.random.default_rng(3)
    graph = random_graph(rng, 2, 12)
    p = random_probabilities(rng, 2, 12, 4)
    expected = dense_quotient(graph, p, kind)
    assert torch.allclose(rayleigh_quotient(graph, p, kind), expected, rtol=1e-12, atol=0)


def components_with_isolated_node(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (1, 10, 10) adjacency with components of sizes 4, 5 and an isolated node, nodes
    shuffled, and each node's component id."""
    labels = rng.permutation(np.repeat([0, 1, 2], [4, 5, 1]))
    same = labels[:, None] == labels[None, :]
    upper = np.triu(rng.uniform(0.2, 3.0, same.shape) * same, 1)
    return (upper + upper.T)[None], labels


def test_component_constant_probabilities_score_zero_on_l_sym():
    rng = np.random.default_rng(7)
    dense, labels = components_with_isolated_node(rng)
    graph = graph_from_dense(dense)
    degrees = dense.sum(-1)[0]
    assert degrees[labels == 2] == 0 and len(set(degrees.round(6))) > 3  # uneven degrees
    per_component = random_probabilities(rng, 1, 3, 4)[0]
    p = per_component[torch.from_numpy(labels)].unsqueeze(0)  # constant on each component
    # Q = D^1/2 P lies in the null space of L_sym ...
    l_sym = laplacian_to_dense(graph, "symmetric")
    q = torch.from_numpy(np.sqrt(degrees))[None, :, None] * p
    assert (l_sym @ q).abs().max() < 1e-12
    # ... so the quotient is 0; without the scaling it would not be.
    assert rayleigh_quotient(graph, p, "symmetric").abs().item() < 1e-12
    naive = torch.einsum("bnc,bnc->b", p, l_sym @ p) / p.square().sum((1, 2))
    assert naive.item() > 1e-3
    for kind in LAPLACIAN_KINDS:
        assert rayleigh_quotient(graph, p, kind).abs().item() < 1e-12
    # A prediction that varies inside a component scores > 0.
    varied = p.clone()
    varied[0, np.flatnonzero(labels == 0)[0]] = torch.tensor([1.0, 0, 0, 0], dtype=DTYPE)
    assert rayleigh_quotient(graph, varied, "symmetric").item() > 1e-3


def test_gradcheck_in_probabilities_and_weights():
    rng = np.random.default_rng(5)
    graph = random_graph(rng, 2, 7)
    p = random_probabilities(rng, 2, 7, 3).requires_grad_(True)
    # Weights as squares, so that gradcheck's perturbations keep them >= 0 (padding: 0).
    root = graph.weight.sqrt().requires_grad_(True)

    def quotient(probabilities, weight_root):
        graph_now = NeighborGraph(graph.index, weight_root.square())
        return rayleigh_quotient(graph_now, probabilities, "symmetric")

    assert torch.autograd.gradcheck(quotient, (p, root))


def spectral_aux(feature_logits: torch.Tensor, graph: NeighborGraph, kind="symmetric") -> dict:
    return {"graph": graph, "laplacian": kind, "feature_logits": feature_logits}


def test_module_orders_nodes_row_major_and_averages_the_batch():
    # 2 x 2 feature map; edges join (y, x) = (0, 0)-(1, 0) and (0, 1)-(1, 1): columns.
    # Node ids are y * w + x, so those are nodes 0-2 and 1-3.
    dense = np.zeros((1, 4, 4))
    dense[0, 0, 2] = dense[0, 2, 0] = 1.0
    dense[0, 1, 3] = dense[0, 3, 1] = 2.0
    graph = graph_from_dense(np.concatenate([dense, dense]))
    logits = torch.zeros(2, 3, 2, 2, dtype=DTYPE)
    logits[0, 0, :, 0] = 4.0  # image 0: constant down each column -> 0
    logits[1, 0, 0, :] = 4.0  # image 1: constant along rows -> positive
    loss = RayleighConsistency(num_classes=3)
    p1 = torch.softmax(logits[1], 0).flatten(1).T.unsqueeze(0)
    expected = rayleigh_quotient(NeighborGraph(graph.index[1:], graph.weight[1:]), p1, "symmetric")
    assert expected.item() > 0.1
    value = loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8), spectral_aux(logits, graph))
    assert value.item() == pytest.approx(expected.item() / 2, rel=1e-12)


def test_detach_graph_stops_the_weight_gradient():
    rng = np.random.default_rng(11)
    dense = random_graph(rng, 1, 6)
    weight = dense.weight.clone().requires_grad_(True)
    graph = NeighborGraph(dense.index, weight)
    feature_logits = torch.randn(1, 3, 2, 3, dtype=DTYPE, requires_grad=True)
    aux = spectral_aux(feature_logits, graph)
    RayleighConsistency()(torch.zeros(1, 3, 4, 6), None, aux).backward()
    assert weight.grad.abs().sum() > 0 and torch.isfinite(feature_logits.grad).all()
    weight.grad = feature_logits.grad = None
    RayleighConsistency(detach_graph=True)(torch.zeros(1, 3, 4, 6), None, aux).backward()
    assert weight.grad is None and feature_logits.grad.abs().sum() > 0


def test_missing_and_mismatched_auxiliaries():
    graph = path_graph()
    logits = torch.zeros(1, 2, 1, 3, dtype=DTYPE)
    loss = RayleighConsistency(num_classes=2)
    with pytest.raises(ValueError, match=r"'rayleigh' needs aux\['graph'\] from head=spectral"):
        loss(logits, None, {})
    with pytest.raises(ValueError, match="head=conv provides none"):
        loss(logits, None, None)
    with pytest.raises(ValueError, match=r"aux\['laplacian'\]"):
        loss(logits, None, {"graph": graph, "feature_logits": logits})
    with pytest.raises(ValueError, match="kind must be one of"):
        loss(logits, None, spectral_aux(logits, graph, "normalized"))
    with pytest.raises(ValueError, match=r"\(B, N\) = \(1, 4\)"):
        loss(logits, None, spectral_aux(torch.zeros(1, 2, 2, 2, dtype=DTYPE), graph))
    with pytest.raises(ValueError, match="expected num_classes=2"):
        loss(logits, None, spectral_aux(torch.zeros(1, 3, 1, 3, dtype=DTYPE), graph))
