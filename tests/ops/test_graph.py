"""NeighborGraph: validation, products, conversions and symmetrisation against dense oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cheeger.ops.graph import (
    NeighborGraph,
    adjacency_matvec,
    degree,
    edge_inner_product,
    graph_union,
    symmetrize,
    to_dense,
    to_scipy,
    to_torch_csr,
    validate_graph,
)

DTYPE = torch.float64


def random_symmetric_dense(rng: np.random.Generator, batch: int, n: int, density: float):
    """Dense symmetric non-negative (B, N, N) with zero diagonal; some rows may be empty."""
    upper = rng.random((batch, n, n)) * (rng.random((batch, n, n)) < density)
    upper = np.triu(upper, k=1)
    return upper + np.transpose(upper, (0, 2, 1))


def lists_from_dense(dense: np.ndarray, extra: int, rng: np.random.Generator, pad_self=True):
    """Neighbour lists of a dense matrix in shuffled slot order, padded with ``extra`` slots.

    Padding slots point at the row itself, or (pad_self=False) at a random node.
    """
    batch, n, _ = dense.shape
    slots = int((dense > 0).sum(-1).max()) + extra
    index = np.empty((batch, n, slots), dtype=np.int64)
    weight = np.zeros((batch, n, slots))
    for b in range(batch):
        for i in range(n):
            cols = np.flatnonzero(dense[b, i])
            pad = slots - cols.size
            fill = np.full(pad, i) if pad_self else rng.integers(0, n, pad)
            row_index = np.concatenate([cols, fill])
            row_weight = np.concatenate([dense[b, i, cols], np.zeros(pad)])
            order = rng.permutation(slots)
            index[b, i] = row_index[order]
            weight[b, i] = row_weight[order]
    return torch.from_numpy(index), torch.from_numpy(weight)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- validation


def test_valid_graph_exposes_sizes(rng):
    index, weight = lists_from_dense(random_symmetric_dense(rng, 2, 6, 0.5), 2, rng)
    graph = NeighborGraph(index, weight)
    assert (graph.batch_size, graph.num_nodes, graph.max_degree) == tuple(index.shape)


@pytest.mark.parametrize(
    ("index", "weight", "message"),
    [
        (torch.zeros(1, 3, 2, dtype=torch.int32), torch.zeros(1, 3, 2), "index must be an int64"),
        (
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.zeros(1, 3, 2, dtype=torch.int64),
            "weight",
        ),
        (torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 2), r"index must be \(B, N, K\)"),
        (
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.zeros(1, 3, 3),
            "weight must have the shape",
        ),
        (torch.full((1, 3, 2), 3), torch.zeros(1, 3, 2), r"index entries must lie in \[0, N\)"),
        (torch.full((1, 3, 2), -1), torch.zeros(1, 3, 2), r"index entries must lie in \[0, N\)"),
        (
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.full((1, 3, 2), -0.5),
            "weight must be >= 0",
        ),
        (
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.tensor([[[0.0, float("nan")], [0, 0], [0, 0]]]),
            "weight must be finite",
        ),
        (
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.tensor([[[0.0, float("inf")], [0, 0], [0, 0]]]),
            "weight must be finite",
        ),
        (torch.zeros(1, 0, 2, dtype=torch.int64), torch.zeros(1, 0, 2), r"N >= 1"),
    ],
)
def test_invalid_graphs_raise_naming_the_argument(index, weight, message):
    with pytest.raises(ValueError, match=message):
        NeighborGraph(index, weight)


def test_validate_graph_detects_asymmetry():
    index = torch.tensor([[[1], [0]]])
    symmetric = NeighborGraph(index, torch.tensor([[[0.5], [0.5]]], dtype=DTYPE))
    assert validate_graph(symmetric, check_symmetric=True) is symmetric
    skewed = NeighborGraph(index, torch.tensor([[[0.5], [0.25]]], dtype=DTYPE))
    with pytest.raises(ValueError, match="graph must be symmetric"):
        validate_graph(skewed, check_symmetric=True)
    validate_graph(skewed, check_symmetric=True, atol=0.3)


# --------------------------------------------------------------------------- products


@pytest.mark.parametrize("pad_self", [True, False])
def test_degree_and_matvec_match_dense(rng, pad_self):
    dense = random_symmetric_dense(rng, 3, 11, 0.4)
    index, weight = lists_from_dense(dense, 3, rng, pad_self=pad_self)
    graph = NeighborGraph(index, weight)
    x = torch.from_numpy(rng.standard_normal((3, 11, 4)))
    np.testing.assert_allclose(degree(graph).numpy(), dense.sum(-1), atol=1e-12)
    np.testing.assert_allclose(adjacency_matvec(graph, x).numpy(), dense @ x.numpy(), atol=1e-12)


def test_matvec_sums_duplicate_slots():
    # Row 0 lists node 1 twice (0.25 + 0.5); row 1 lists node 0 once with the total.
    index = torch.tensor([[[1, 1], [0, 1]]])
    weight = torch.tensor([[[0.25, 0.5], [0.75, 0.0]]], dtype=DTYPE)
    graph = NeighborGraph(index, weight)
    x = torch.tensor([[[2.0], [3.0]]], dtype=DTYPE)
    expected = np.array([[[0.75 * 3.0], [0.75 * 2.0]]])
    np.testing.assert_allclose(adjacency_matvec(graph, x).numpy(), expected)
    np.testing.assert_allclose(to_dense(graph).numpy(), [[[0.0, 0.75], [0.75, 0.0]]])


def test_matvec_gradcheck_in_weight_and_vectors(rng):
    dense = random_symmetric_dense(rng, 2, 5, 0.6)
    index, base = lists_from_dense(dense, 1, rng)
    x = torch.from_numpy(rng.standard_normal((2, 5, 2))).requires_grad_()
    weight = base.clone().requires_grad_()

    def product(w, v):
        # The value checks of NeighborGraph would reject gradcheck's negative probes
        # of padding weights; the product itself is linear, so bypass them.
        return adjacency_matvec(_unchecked(index, w), v)

    assert torch.autograd.gradcheck(product, (weight, x))


def _unchecked(index, weight):
    graph = object.__new__(NeighborGraph)
    object.__setattr__(graph, "index", index)
    object.__setattr__(graph, "weight", weight)
    return graph


def test_matvec_rejects_mismatched_vectors(rng):
    index, weight = lists_from_dense(random_symmetric_dense(rng, 1, 5, 0.5), 1, rng)
    graph = NeighborGraph(index, weight)
    with pytest.raises(ValueError, match=r"x must be \(B, N, m\)"):
        adjacency_matvec(graph, torch.zeros(1, 4, 2, dtype=DTYPE))
    with pytest.raises(ValueError, match="x must have dtype"):
        adjacency_matvec(graph, torch.zeros(1, 5, 2, dtype=torch.float32))


@pytest.mark.parametrize(("batch", "n", "k"), [(2, 6, 3), (1, 3, 5)])
def test_edge_inner_product_on_directed_lists(rng, batch, n, k):
    # (1, 3, 5): more slots than nodes, the shape torch's sampled product refuses.
    index = torch.from_numpy(rng.integers(0, n, (batch, n, k)))
    x = torch.from_numpy(rng.standard_normal((batch, n, 2))).requires_grad_()
    y = torch.from_numpy(rng.standard_normal((batch, n, 2))).requires_grad_()
    out = edge_inner_product(index, x, y)
    xn, yn, idx = x.detach().numpy(), y.detach().numpy(), index.numpy()
    expected = np.einsum("bic,bijc->bij", xn, yn[np.arange(batch)[:, None, None], idx])
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)
    # The pattern is not symmetric: the gradient in y needs the transposed pattern.
    assert torch.autograd.gradcheck(lambda a, b: edge_inner_product(index, a, b), (x, y))


# --------------------------------------------------------------------------- conversions


def test_conversions_agree(rng):
    dense = random_symmetric_dense(rng, 2, 8, 0.4)
    index, weight = lists_from_dense(dense, 2, rng, pad_self=False)
    graph = NeighborGraph(index, weight)
    np.testing.assert_allclose(to_dense(graph).numpy(), dense, atol=1e-15)
    for b, matrix in enumerate(to_scipy(graph)):
        np.testing.assert_allclose(matrix.toarray(), dense[b], atol=1e-15)
        assert matrix.nnz == np.count_nonzero(dense[b])
    block = to_torch_csr(graph)
    assert block.layout == torch.sparse_csr and block.shape == (16, 16)
    x = torch.from_numpy(rng.standard_normal((2, 8, 3)))
    stacked = (block @ x.reshape(16, 3)).reshape(2, 8, 3)
    np.testing.assert_allclose(stacked.numpy(), dense @ x.numpy(), atol=1e-12)


# --------------------------------------------------------------------------- symmetrisation


def directed_lists(rng, batch, n, k, self_slots=True):
    """Random directed lists with distinct positive weights and some self (padding) slots."""
    index = np.stack(
        [np.stack([rng.choice(n, k, replace=False) for _ in range(n)]) for _ in range(batch)]
    )
    if self_slots:
        index[:, ::3, 0] = np.arange(n)[::3]
    weight = rng.permutation(batch * n * k).reshape(batch, n, k) / (batch * n * k) + 0.01
    return torch.from_numpy(index), torch.from_numpy(weight)


def dense_directed(index, weight):
    batch, n, _ = index.shape
    out = np.zeros((batch, n, n))
    for b in range(batch):
        for i in range(n):
            for slot in range(index.shape[2]):
                j = int(index[b, i, slot])
                if j != i:
                    out[b, i, j] = max(out[b, i, j], float(weight[b, i, slot]))
    return out


def check_padded_layout(graph: NeighborGraph):
    """Padding (self slots) has weight 0 and follows the real slots, which ascend by id.

    Listed pairs whose weight is 0 stay real slots: the structure comes from the lists.
    """
    own = torch.arange(graph.num_nodes).view(1, -1, 1)
    padding = graph.index == own
    assert torch.all(graph.weight[padding] == 0)
    real = graph.index.masked_fill(padding, graph.num_nodes)
    assert torch.all(real[..., 1:] >= real[..., :-1])
    assert torch.all((real[..., 1:] > real[..., :-1]) | padding[..., 1:])  # no repeats


@pytest.mark.parametrize(("mode", "combine"), [("union", np.maximum), ("mutual", np.minimum)])
def test_symmetrize_matches_dense_max_and_min(rng, mode, combine):
    index, weight = directed_lists(rng, 2, 12, 4)
    directed = dense_directed(index, weight)
    expected = combine(directed, np.transpose(directed, (0, 2, 1)))
    graph = symmetrize(index, weight, mode)
    np.testing.assert_allclose(to_dense(graph).numpy(), expected, atol=0)
    validate_graph(graph, check_symmetric=True)
    check_padded_layout(graph)
    assert graph.max_degree == max(1, int((expected > 0).sum(-1).max()))


def test_symmetrize_combines_duplicate_slots_by_max():
    index = torch.tensor([[[1, 1], [2, 2], [0, 1]]])
    weight = torch.tensor([[[0.2, 0.6], [0.3, 0.1], [0.4, 0.5]]], dtype=DTYPE)
    expected = np.array([[0.0, 0.6, 0.4], [0.6, 0.0, 0.5], [0.4, 0.5, 0.0]])
    np.testing.assert_allclose(to_dense(symmetrize(index, weight, "union"))[0].numpy(), expected)
    # Only {1, 2} is listed both ways: min(max(0.3, 0.1), 0.5).
    mutual = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.0, 0.3, 0.0]])
    np.testing.assert_allclose(to_dense(symmetrize(index, weight, "mutual"))[0].numpy(), mutual)


def test_symmetrize_without_edges_gives_one_padding_slot():
    index = torch.arange(4).view(1, 4, 1).expand(2, 4, 3).contiguous()
    graph = symmetrize(index, torch.ones(2, 4, 3, dtype=DTYPE), "union")
    assert graph.index.shape == (2, 4, 1)
    assert torch.all(graph.weight == 0)
    assert torch.equal(graph.index[..., 0], torch.arange(4).expand(2, 4))


@pytest.mark.parametrize("mode", ["union", "mutual"])
def test_symmetrize_gradcheck(rng, mode):
    index, weight = directed_lists(rng, 1, 8, 3)
    weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda w: symmetrize(index, w, mode).weight, (weight,))


def test_symmetrize_rejects_bad_mode(rng):
    index, weight = directed_lists(rng, 1, 5, 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        symmetrize(index, weight, "mean")
    with pytest.raises(ValueError, match="max_degree must be"):
        symmetrize(index, weight, "union", max_degree=0)


@pytest.mark.parametrize("cap", [1, 2, 4])
def test_degree_cap_keeps_edges_ranked_in_both_rows(rng, cap):
    index, weight = directed_lists(rng, 2, 15, 5)
    full = to_dense(symmetrize(index, weight, "union")).numpy()
    capped = symmetrize(index, weight, "union", max_degree=cap)
    # Oracle: rank each row's edges by weight (weights are distinct), keep rank < cap at both ends.
    rank = np.full(full.shape, np.inf)
    for b in range(full.shape[0]):
        for i in range(full.shape[1]):
            cols = np.flatnonzero(full[b, i])
            rank[b, i, cols[np.argsort(-full[b, i, cols])]] = np.arange(cols.size)
    keep = (rank < cap) & (np.transpose(rank, (0, 2, 1)) < cap)
    np.testing.assert_allclose(to_dense(capped).numpy(), np.where(keep, full, 0.0))
    assert capped.max_degree <= cap
    validate_graph(capped, check_symmetric=True)


def test_graph_union_is_the_dense_maximum(rng):
    first = random_symmetric_dense(rng, 2, 9, 0.3)
    second = random_symmetric_dense(rng, 2, 9, 0.3)
    graphs = [NeighborGraph(*lists_from_dense(d, 1, rng)) for d in (first, second)]
    union = graph_union(*graphs)
    np.testing.assert_allclose(to_dense(union).numpy(), np.maximum(first, second))
    with pytest.raises(ValueError, match="graphs must contain"):
        graph_union()
    other = NeighborGraph(*lists_from_dense(random_symmetric_dense(rng, 2, 5, 0.5), 1, rng))
    with pytest.raises(ValueError, match=r"graphs\[1\] must have \(B, N\)"):
        graph_union(graphs[0], other)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    k=st.integers(1, 6),
    zero_fraction=st.sampled_from([0.0, 0.3, 1.0]),
    cap=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 2**31 - 1),
)
def test_symmetrize_fuzz(n, k, zero_fraction, cap, seed):
    # Any lists: repeated neighbours, self slots, zero weights, more slots than nodes.
    rng = np.random.default_rng(seed)
    index = torch.from_numpy(rng.integers(0, n, (2, n, k)))
    weight = rng.random((2, n, k)) * (rng.random((2, n, k)) >= zero_fraction)
    weight = torch.from_numpy(weight)
    directed = dense_directed(index, weight)
    for mode, combine in (("union", np.maximum), ("mutual", np.minimum)):
        graph = symmetrize(index, weight, mode, max_degree=cap)
        dense = to_dense(graph).numpy()
        validate_graph(graph, check_symmetric=True)
        check_padded_layout(graph)
        expected = combine(directed, np.transpose(directed, (0, 2, 1)))
        if cap is None:
            np.testing.assert_array_equal(dense, expected)
        else:
            assert graph.max_degree <= cap
            kept = dense > 0
            np.testing.assert_array_equal(dense[kept], expected[kept])
