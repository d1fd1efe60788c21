"""Label propagation on a graph: the personalised-PageRank diffusion of node signals.

Starting from q_0 = p, the iteration

    q_{t+1} = (1 - β) p + β D^-1 W q_t

converges (0 <= β < 1) to q = (1 - β) (I - β D^-1 W)^-1 p, the spectral filter
h(L_rw) p with h(λ) = (1 - β) / (1 - β + β λ): 1 on each connected component's
constants and falling off as 1 / λ, sharply for β near 1. A probability vector at each
node stays one (rows of D^-1 W sum to 1 and the update is a convex combination), so
the result can be read as class probabilities. After T iterations the error is at
most β^T ||p - q||. Isolated nodes (degree 0) keep their p. Cost O(T B N K C).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cheeger.ops.graph import NeighborGraph, adjacency_matvec
from cheeger.ops.laplacian import inverse_degree_power


def pagerank_propagate(graph: NeighborGraph, p: Tensor, beta: float, iterations: int) -> Tensor:
    """``iterations`` steps of q <- (1 - β) p + β D^-1 W q from q = p.

    Args:
        graph: symmetric NeighborGraph (B, N, K).
        p: (B, N, C) node signals (e.g. class probabilities), dtype of ``graph.weight``.
        beta: 0 <= β < 1, the share each step takes from the neighbours.
        iterations: T >= 0.

    Returns:
        (B, N, C); differentiable in ``p`` and ``graph.weight``.
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise ValueError(f"beta must be a number in [0, 1), found {beta!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, found {iterations!r}")
    if p.dim() != 3 or p.shape[:2] != graph.index.shape[:2]:
        raise ValueError(
            f"p must be (B, N, C) = ({graph.batch_size}, {graph.num_nodes}, C), "
            f"found {tuple(p.shape)}"
        )
    inverse = inverse_degree_power(graph, 1.0).unsqueeze(-1)  # (B, N, 1), 0 where isolated
    isolated = (inverse == 0).to(p.dtype)
    q = p
    for _ in range(iterations):
        # An isolated node has no neighbours to average: it keeps its own value.
        neighbours = inverse * adjacency_matvec(graph, q) + isolated * q
        q = torch.lerp(p, neighbours, beta)
    return q
