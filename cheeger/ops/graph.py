"""Batched sparse graphs stored as fixed-degree neighbour lists.

A :class:`NeighborGraph` holds B graphs on N nodes each as two tensors of the
same shape (B, N, K): ``index[b, i, j]`` is the j-th neighbour slot of node i
and ``weight[b, i, j] >= 0`` its edge weight. The adjacency matrix is the sum
over slots,

    W[b, i, l] = sum_{j : index[b, i, j] = l} weight[b, i, j],

so ``W @ X`` is one gather and a weighted sum over K:
``(W X)[b, i] = sum_j weight[b, i, j] * X[b, index[b, i, j]]``.

Conventions every op in ``cheeger.ops`` relies on:

* Symmetric storage. Each undirected edge {i, l} appears in row i and in row l
  with the same weight, so W is symmetric. The builders (``symmetrize``,
  ``knn_graph``, ``grid_graph``) guarantee it; ``validate_graph(...,
  check_symmetric=True)`` checks it for hand-made graphs.
* Padding. Rows with fewer than K edges are padded with slots of weight exactly
  0 whose index is the row itself (index[b, i, j] = i). Every op is also
  correct when a padding slot points at any other node, since a zero weight
  contributes nothing to W; ``symmetrize`` ignores slots that point at their
  own row, so self-loops cannot be expressed through it. A slot pointing at
  another node may also carry weight 0 (a listed pair whose affinity is 0).
* Differentiability. Everything is differentiable with respect to ``weight``
  (first order); ``index`` is integer data.

Cost. Every op is linear in B N K, padding included: K is the largest degree,
so one hub inflates every row (see ``symmetrize(max_degree=...)``). Matrix
products go through torch's CSR kernels (a fixed degree makes the CSR row
pointer an arithmetic progression, so nothing is sorted), with a custom backward;
their speed against a gather of the (N, K, m) neighbour block, torch's CSR autograd
and scipy is measured in experiments/results/bench_ops.md (experiments/bench_ops.py).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

SymmetrizeMode = Literal["union", "mutual"]
SYMMETRIZE_MODES = ("union", "mutual")


@dataclass(frozen=True, eq=False)
class NeighborGraph:
    """B weighted undirected graphs on N nodes with at most K edges per node.

    Attributes:
        index: int64 (B, N, K), neighbour ids in [0, N); padding slots hold the
            row's own id.
        weight: float (B, N, K), finite and >= 0, exactly 0 on padding slots;
            may require grad.
        node_features: optional (B, N, C), the (metric-mapped) node features the
            weights were computed from, and
        bandwidth: optional (B,) or scalar, their kernel bandwidth σ. Builders that
            know them attach them (``cheeger.models.affinity``) for solvers that
            rebuild a dense kernel of the same features (Nyström); every other op
            reads only ``index`` and ``weight``, and derived graphs drop them.

    Construction validates shapes, dtypes, the index range and the weights
    (finite, non-negative) and raises ``ValueError`` naming the argument. The
    tensors are not copied: do not modify them in place afterwards. Equality is
    identity (comparing tensors elementwise has no single truth value).
    """

    index: Tensor
    weight: Tensor
    node_features: Tensor | None = None
    bandwidth: Tensor | None = None

    def __post_init__(self) -> None:
        _check_neighbor_lists(self.index, self.weight)

    @classmethod
    def derived(
        cls,
        index: Tensor,
        weight: Tensor,
        node_features: Tensor | None = None,
        bandwidth: Tensor | None = None,
    ) -> NeighborGraph:
        """A graph built without the construction checks, which read the device twice.

        For ops that derive it from a graph that passed them: the same or a rebuilt
        index, and weights detached or rescaled by finite non-negative factors. Users
        construct ``NeighborGraph(index, weight)``.
        """
        graph = object.__new__(cls)
        for name, value in (
            ("index", index),
            ("weight", weight),
            ("node_features", node_features),
            ("bandwidth", bandwidth),
        ):
            object.__setattr__(graph, name, value)
        return graph

    @property
    def batch_size(self) -> int:
        return self.index.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.index.shape[1]

    @property
    def max_degree(self) -> int:
        """K, the number of slots per row (an upper bound on the edge count)."""
        return self.index.shape[2]


def _check_neighbor_lists(index: Tensor, weight: Tensor) -> None:
    if not isinstance(index, Tensor) or index.dtype != torch.int64:
        found = index.dtype if isinstance(index, Tensor) else type(index).__name__
        raise ValueError(f"index must be an int64 tensor, found {found}")
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        found = weight.dtype if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a floating-point tensor, found {found}")
    if index.dim() != 3:
        raise ValueError(f"index must be (B, N, K), found shape {tuple(index.shape)}")
    if weight.shape != index.shape:
        raise ValueError(
            f"weight must have the shape of index {tuple(index.shape)}, found {tuple(weight.shape)}"
        )
    if index.device != weight.device:
        raise ValueError(
            f"index and weight must be on one device, found {index.device} and {weight.device}"
        )
    num_nodes = index.shape[1]
    if num_nodes == 0:
        raise ValueError("index must describe at least one node (N >= 1), found N = 0")
    if index.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(index)).tolist()  # one read of the device
    if low < 0 or high >= num_nodes:
        raise ValueError(
            f"index entries must lie in [0, N) = [0, {num_nodes}), found range [{low}, {high}]"
        )
    check_weights(weight, "weight")


def check_weights(weight: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless every entry is finite and >= 0.

    One pass and one read of the device: NaN propagates into the minimum, Inf shows
    in the maximum.
    """
    if weight.numel() == 0:
        return
    w_min, w_max = torch.stack(torch.aminmax(weight.detach())).tolist()
    if not (math.isfinite(w_min) and math.isfinite(w_max)):
        raise ValueError(f"{name} must be finite, found NaN or Inf entries")
    if w_min < 0:
        raise ValueError(f"{name} must be >= 0, found minimum {w_min}")


def validate_graph(
    graph: NeighborGraph, *, check_symmetric: bool = False, atol: float = 0.0
) -> NeighborGraph:
    """Check a graph's tensors again and, optionally, that W equals W^T.

    The symmetry check builds each batch element's sparse matrix (O(B N K log))
    and compares |W - W^T| entrywise against ``atol`` (0: exact). Raises
    ``ValueError``; returns the graph so that it can be chained.
    """
    _check_neighbor_lists(graph.index, graph.weight)
    if check_symmetric:
        for b, matrix in enumerate(to_scipy(graph)):
            gap = abs(matrix - matrix.T)
            largest = gap.max() if gap.nnz else 0.0
            if largest > atol:
                raise ValueError(
                    f"graph must be symmetric (W = W^T within atol={atol}); batch element {b} "
                    f"has |W - W^T| up to {largest:.3g}"
                )
    return graph


def degree(graph: NeighborGraph) -> Tensor:
    """Weighted degree d_i = sum_l W_il, shape (B, N), differentiable."""
    return graph.weight.sum(dim=-1)


# --------------------------------------------------------------------------- CSR kernels


def _flat_columns(index: Tensor) -> Tensor:
    """Column ids of the block-diagonal (B N, B N) matrix, flattened to (B N K,)."""
    batch, num_nodes, _ = index.shape
    if batch == 1:
        return index.reshape(-1)
    offset = torch.arange(batch, device=index.device).view(batch, 1, 1) * num_nodes
    return (index + offset).reshape(-1)


def _block_csr(index: Tensor, values: Tensor) -> Tensor:
    """The B graphs as one block-diagonal CSR matrix of size (B N, B N).

    Slots are kept as stored entries, duplicates and explicit zeros included
    (torch's CSR product sums them, which is exactly the slot semantics).
    """
    batch, num_nodes, slots = index.shape
    rows = batch * num_nodes
    crow = torch.arange(rows + 1, device=index.device) * slots
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            _flat_columns(index),
            values.reshape(-1),
            (rows, rows),
            check_invariants=False,
        )


def _block_csr_transpose(index: Tensor, values: Tensor) -> Tensor:
    """CSR of the transpose of ``_block_csr(index, values)``: one sort of the columns."""
    batch, num_nodes, slots = index.shape
    rows = batch * num_nodes
    columns = _flat_columns(index)
    order = torch.argsort(columns, stable=True)
    counts = torch.bincount(columns, minlength=rows)
    crow = torch.zeros(rows + 1, dtype=torch.int64, device=index.device)
    crow[1:] = torch.cumsum(counts, dim=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            torch.div(order, slots, rounding_mode="floor"),
            values.reshape(-1)[order],
            (rows, rows),
            check_invariants=False,
        )


def _sampled_inner_product(index: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """out[b, i, j] = <x[b, i], y[b, index[b, i, j]]>, only on the stored slots."""
    batch, num_nodes, slots = index.shape
    width = x.shape[-1]
    if slots > batch * num_nodes:
        # torch's sampled_addmm fails when a CSR stores more entries than its dense
        # size, which only tiny graphs with repeated slots reach: gather instead.
        neighbours = y.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, width))
        return (x.unsqueeze(2) * neighbours.view(batch, num_nodes, slots, width)).sum(-1)
    pattern = _block_csr(index, torch.zeros(index.numel(), dtype=x.dtype, device=x.device))
    sampled = torch.sparse.sampled_addmm(
        pattern,
        x.reshape(batch * num_nodes, width),
        y.reshape(batch * num_nodes, width).t(),
        beta=0.0,
    )
    return sampled.values().view(batch, num_nodes, slots)


class _AdjacencyMatvec(torch.autograd.Function):
    """W X with W symmetric; backward: dX = W dY, dweight = sampled <dY_i, X_l>."""

    @staticmethod
    def forward(ctx, index: Tensor, weight: Tensor, x: Tensor) -> Tensor:
        batch, num_nodes, width = x.shape
        ctx.save_for_backward(index, weight, x)
        product = _block_csr(index, weight) @ x.reshape(batch * num_nodes, width)
        return product.view(batch, num_nodes, width)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        index, weight, x = ctx.saved_tensors
        batch, num_nodes, width = x.shape
        grad_out = grad_out.contiguous()
        grad_weight = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_weight = _sampled_inner_product(index, grad_out, x)
        if ctx.needs_input_grad[2]:
            # W^T = W by the NeighborGraph contract, so no transpose is built.
            grad_x = _block_csr(index, weight) @ grad_out.view(batch * num_nodes, width)
            grad_x = grad_x.view(batch, num_nodes, width)
        return None, grad_weight, grad_x


class _EdgeInnerProduct(torch.autograd.Function):
    """Sampled inner products on a (possibly directed) slot pattern, with its backward.

    ``mirror`` (optional, int64 (B N K,)): for a symmetric pattern, the flat position
    of each slot's reverse slot (the slot of row l listing i, for slot (i, l)). It
    lets the backward read the transpose's values off the same pattern instead of
    sorting the columns; builders that know it by construction (grid windows) pass it.
    """

    @staticmethod
    def forward(ctx, index: Tensor, x: Tensor, y: Tensor, mirror: Tensor | None = None) -> Tensor:
        ctx.save_for_backward(index, x, y, mirror)
        return _sampled_inner_product(index, x, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        index, x, y, mirror = ctx.saved_tensors
        batch, num_nodes, width = x.shape
        grad_out = grad_out.contiguous()
        grad_x = grad_y = None
        if ctx.needs_input_grad[1]:
            grad_x = _block_csr(index, grad_out) @ y.reshape(batch * num_nodes, width)
            grad_x = grad_x.view(batch, num_nodes, width)
        if ctx.needs_input_grad[2]:
            if mirror is None:
                transposed = _block_csr_transpose(index, grad_out)
            else:
                transposed = _block_csr(index, grad_out.reshape(-1)[mirror])
            grad_y = transposed @ x.reshape(batch * num_nodes, width)
            grad_y = grad_y.view(batch, num_nodes, width)
        return None, grad_x, grad_y, None


def _check_node_block(name: str, x: Tensor, index: Tensor, dtype: torch.dtype) -> None:
    batch, num_nodes, _ = index.shape
    if x.dim() != 3 or x.shape[0] != batch or x.shape[1] != num_nodes:
        raise ValueError(
            f"{name} must be (B, N, m) = ({batch}, {num_nodes}, m), found {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, found {x.dtype}")
    if x.device != index.device:
        raise ValueError(f"{name} must be on {index.device}, found {x.device}")


def edge_inner_product(index: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Inner products on the slots of a neighbour list.

    Args:
        index: int64 (B, N, K), entries in [0, N); need not be symmetric.
        x, y: (B, N, C), same floating dtype.

    Returns:
        (B, N, K) with out[b, i, j] = <x[b, i], y[b, index[b, i, j]]>; differentiable
        in x and y, memory O(B N (K + C)) (no (N, K, C) gather is stored).
    """
    if index.dim() != 3 or index.dtype != torch.int64:
        raise ValueError(f"index must be int64 (B, N, K), found {index.dtype} {tuple(index.shape)}")
    _check_node_block("x", x, index, x.dtype)
    _check_node_block("y", y, index, x.dtype)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= index.shape[1]):
        raise ValueError(f"index entries must lie in [0, N) = [0, {index.shape[1]})")
    return _EdgeInnerProduct.apply(index, x.contiguous(), y.contiguous(), None)


def adjacency_matvec(graph: NeighborGraph, x: Tensor) -> Tensor:
    """W X for a block of vectors.

    Args:
        graph: a symmetric NeighborGraph (B, N, K).
        x: (B, N, m) with the dtype of ``graph.weight``.

    Returns:
        (B, N, m), out[b, i] = sum_j weight[b, i, j] * x[b, index[b, i, j]].
        Differentiable in ``graph.weight`` and ``x`` (first order); the gradient in
        x uses W^T = W, which symmetric storage guarantees.
    """
    _check_node_block("x", x, graph.index, graph.weight.dtype)
    return _AdjacencyMatvec.apply(graph.index, graph.weight, x.contiguous())


# --------------------------------------------------------------------------- conversions


def to_dense(graph: NeighborGraph) -> Tensor:
    """Dense adjacency (B, N, N), duplicates summed; differentiable in the weights."""
    batch, num_nodes, _ = graph.index.shape
    dense = graph.weight.new_zeros(batch, num_nodes, num_nodes)
    return dense.scatter_add(2, graph.index, graph.weight)


def to_scipy(graph: NeighborGraph) -> list[scipy.sparse.csr_matrix]:
    """One scipy CSR matrix (N, N) per batch element (float64, zeros dropped)."""
    batch, num_nodes, slots = graph.index.shape
    rows = np.repeat(np.arange(num_nodes), slots)
    out = []
    for b in range(batch):
        cols = graph.index[b].detach().cpu().numpy().reshape(-1)
        vals = graph.weight[b].detach().cpu().double().numpy().reshape(-1)
        matrix = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(num_nodes, num_nodes))
        matrix = matrix.tocsr()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        out.append(matrix)
    return out


def to_torch_csr(graph: NeighborGraph) -> Tensor:
    """The graphs as one block-diagonal torch CSR matrix of size (B N, B N).

    Batch element b occupies rows and columns [b N, (b + 1) N). Every slot is a
    stored entry (N K per block, padding as explicit zeros, duplicates summed by
    products); column ids are not sorted within a row. The values are
    ``graph.weight`` itself, so torch's sparse autograd applies (it is slow on
    CPU; ``adjacency_matvec`` has a faster backward).
    """
    return _block_csr(graph.index, graph.weight)


# --------------------------------------------------------------------------- symmetrisation


def symmetrize(
    index: Tensor,
    weight: Tensor,
    mode: SymmetrizeMode = "union",
    max_degree: int | None = None,
) -> NeighborGraph:
    """Turn directed neighbour lists into a symmetric NeighborGraph.

    Let A be the directed weight matrix (A[i, l] = weight of the slot of row i
    that lists l; slots that list their own row are ignored, several slots listing
    the same l are combined by max). Then

    * ``"union"``:  W = max(A, A^T); edge {i, l} when either endpoint lists the other.
    * ``"mutual"``: W = min(A, A^T) on pairs listed by both endpoints, else no edge.

    Args:
        index: int64 (B, N, K), entries in [0, N).
        weight: float (B, N, K), finite, >= 0.
        mode: "union" or "mutual".
        max_degree: optional cap on the degree. An edge {i, l} is kept only if it
            is among the ``max_degree`` heaviest edges of i and among those of l
            (ties broken arbitrarily), which keeps W symmetric. Union kNN graphs
            of high-dimensional features have hubs listed by hundreds of nodes
            (k = 16, C = 64, N = 16k: mean degree 28, maximum 500-1000), and the
            fixed-degree layout pads every row to the maximum.

    Returns:
        NeighborGraph (B, N, K') with K' = max(1, largest degree over the batch);
        rows list their neighbours in increasing id order, then padding.
        Differentiable in ``weight`` (max/min pass the gradient to the selected
        entry, split evenly between exact ties).
    """
    if mode not in SYMMETRIZE_MODES:
        raise ValueError(f"mode must be one of {SYMMETRIZE_MODES}, found {mode!r}")
    if max_degree is not None and (
        isinstance(max_degree, bool) or not isinstance(max_degree, int) or max_degree < 1
    ):
        raise ValueError(f"max_degree must be None or an int >= 1, found {max_degree!r}")
    _check_neighbor_lists(index, weight)
    batch, num_nodes, slots = index.shape
    device = index.device
    rows = torch.arange(batch * num_nodes, device=device).repeat_interleave(slots)
    local_rows = rows % num_nodes
    cols = index.reshape(-1)
    flat_weight = weight.reshape(-1)
    listed = cols != local_rows
    rows, local_rows, cols, flat_weight = (
        rows[listed],
        local_rows[listed],
        cols[listed],
        flat_weight[listed],
    )
    base = rows - local_rows  # b * N
    # Each listed slot is an entry of A (key (row, col)) and of A^T (key (col, row)).
    forward_key = rows * num_nodes + cols
    reverse_key = (base + cols) * num_nodes + local_rows
    keys = torch.cat([forward_key, reverse_key])
    values = torch.cat([flat_weight, flat_weight])
    unique_keys, group = torch.unique(keys, sorted=True, return_inverse=True)
    num_groups = unique_keys.numel()
    if mode == "union":
        edge_weight = values.new_zeros(num_groups).scatter_reduce(
            0, group, values, "amax", include_self=False
        )
        kept_keys = unique_keys
    else:
        listed_count = forward_key.numel()
        direction = torch.cat(
            [
                torch.zeros(listed_count, dtype=torch.int64, device=device),
                torch.ones(listed_count, dtype=torch.int64, device=device),
            ]
        )
        half = group * 2 + direction
        per_direction = values.new_zeros(2 * num_groups).scatter_reduce(
            0, half, values, "amax", include_self=False
        )
        present = torch.zeros(2 * num_groups, dtype=torch.bool, device=device)
        present[half] = True
        both = present[0::2] & present[1::2]
        edge_weight = torch.minimum(per_direction[0::2], per_direction[1::2])[both]
        kept_keys = unique_keys[both]
    if max_degree is not None:
        kept_keys, edge_weight = _cap_degree(kept_keys, edge_weight, num_nodes, max_degree)
    return _pack_rows(kept_keys, edge_weight, batch, num_nodes)


def _cap_degree(
    keys: Tensor, values: Tensor, num_nodes: int, max_degree: int
) -> tuple[Tensor, Tensor]:
    """Keep the edges ranked < max_degree by weight in both endpoint rows.

    ``keys`` (sorted row * N + col) must describe a symmetric edge set.
    """
    rows = torch.div(keys, num_nodes, rounding_mode="floor")
    cols = keys - rows * num_nodes
    by_weight = torch.argsort(values.detach(), descending=True, stable=True)
    order = by_weight[torch.argsort(rows[by_weight], stable=True)]  # row, then weight
    counts = torch.bincount(rows)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.empty_like(keys)
    rank[order] = torch.arange(keys.numel(), device=keys.device) - starts[rows[order]]
    local_rows = rows % num_nodes
    mirror = torch.searchsorted(keys, (rows - local_rows + cols) * num_nodes + local_rows)
    keep = (rank < max_degree) & (rank[mirror] < max_degree)
    return keys[keep], values[keep]


def _pack_rows(keys: Tensor, values: Tensor, batch: int, num_nodes: int) -> NeighborGraph:
    """Sorted (row * N + col) keys and their weights -> padded neighbour lists."""
    device = keys.device
    rows = torch.div(keys, num_nodes, rounding_mode="floor")
    cols = keys - rows * num_nodes
    counts = torch.bincount(rows, minlength=batch * num_nodes)
    slots = max(1, int(counts.max())) if counts.numel() else 1
    starts = torch.cumsum(counts, dim=0) - counts
    position = torch.arange(keys.numel(), device=device) - starts[rows]
    flat = rows * slots + position
    own = torch.arange(num_nodes, device=device).repeat(batch).view(batch * num_nodes, 1)
    index = own.expand(batch * num_nodes, slots).clone().view(-1)
    index[flat] = cols
    weight = values.new_zeros(batch * num_nodes * slots).index_put((flat,), values)
    return NeighborGraph.derived(
        index.view(batch, num_nodes, slots), weight.view(batch, num_nodes, slots)
    )


def graph_union(*graphs: NeighborGraph, max_degree: int | None = None) -> NeighborGraph:
    """Edge-wise union of symmetric graphs on the same nodes: W = max(W_1, W_2, ...).

    ``max_degree`` caps the result as in ``symmetrize``.
    """
    if not graphs:
        raise ValueError("graphs must contain at least one NeighborGraph, found none")
    first = graphs[0]
    for position, other in enumerate(graphs[1:], start=1):
        if other.index.shape[:2] != first.index.shape[:2]:
            raise ValueError(
                f"graphs[{position}] must have (B, N) = {tuple(first.index.shape[:2])}, "
                f"found {tuple(other.index.shape[:2])}"
            )
    index = torch.cat([g.index for g in graphs], dim=-1)
    weight = torch.cat([g.weight for g in graphs], dim=-1)
    return symmetrize(index, weight, "union", max_degree)
