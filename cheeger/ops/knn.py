"""Exact k-nearest-neighbour graphs over node features.

The search is exact and brute force, by blocks of rows: for a block of
``chunk_size`` query rows the scores |x_l|^2 - 2 <x_i, x_l> (the squared
distance up to the per-row constant |x_i|^2) are one batched matrix product,
and ``topk`` keeps the k smallest. Memory is O(B chunk_size N + B N k), never
(N, N); time is quadratic in N (experiments/results/bench_ops.md).
The selection carries no gradient; the weights are recomputed afterwards from
the features, differentiably (``cheeger.ops.affinity``), then symmetrised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cheeger.ops.affinity import (
    AFFINITY_KINDS,
    AffinityKind,
    CosineMode,
    apply_metric,
    check_features,
    check_scale,
    edge_affinity,
    normalize_features,
)
from cheeger.ops.checks import check_int
from cheeger.ops.graph import SYMMETRIZE_MODES, NeighborGraph, SymmetrizeMode, symmetrize

# Rows per block: about 2^22 scores (16 MiB in float32) at a time.
_SCORES_PER_BLOCK = 1 << 22


def knn_indices(features: Tensor, k: int, *, chunk_size: int | None = None) -> Tensor:
    """Indices of each node's k nearest other nodes in Euclidean distance.

    Args:
        features: (B, N, C), finite.
        k: neighbours per node, 1 <= k <= N - 1.
        chunk_size: query rows per block (default: about 4M scores per block).

    Returns:
        int64 (B, N, k), sorted by increasing distance, never containing the row
        itself. Duplicate points are ordinary neighbours at distance 0; among
        equidistant candidates the choice is arbitrary (``topk`` order).
    """
    check_features(features)
    batch, num_nodes, _ = features.shape
    k = check_int("k", k, 1, num_nodes - 1, "N - 1")
    if chunk_size is None:
        chunk_size = max(1, _SCORES_PER_BLOCK // (batch * num_nodes))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, found {chunk_size}")
    with torch.no_grad():
        points = features.detach()
        points = points - points.mean(dim=1, keepdim=True)
        norms = (points * points).sum(dim=-1).unsqueeze(1)  # (B, 1, N)
        columns = points.transpose(1, 2)
        out = torch.empty(batch, num_nodes, k, dtype=torch.int64, device=features.device)
        for start in range(0, num_nodes, chunk_size):
            stop = min(start + chunk_size, num_nodes)
            scores = torch.baddbmm(norms, points[:, start:stop], columns, alpha=-2.0)
            rows = torch.arange(stop - start, device=features.device)
            scores[:, rows, rows + start] = float("inf")
            out[:, start:stop] = torch.topk(scores, k, dim=-1, largest=False, sorted=True).indices
    return out


def knn_graph(
    features: Tensor,
    k: int,
    *,
    affinity: AffinityKind = "gaussian",
    sigma: Tensor | float | None = None,
    metric: Tensor | None = None,
    scale_neighbor: int = 7,
    cosine_mode: CosineMode = "clamp",
    mode: SymmetrizeMode = "union",
    max_degree: int | None = None,
    chunk_size: int | None = None,
) -> NeighborGraph:
    """Symmetric kNN graph with differentiable edge weights.

    The neighbours are searched in the space the affinity measures: the features
    mapped by ``metric`` (Euclidean), normalised to unit length for "cosine".
    The directed lists are weighted by ``edge_affinity(features, index, affinity,
    ...)`` and symmetrised by ``mode`` ("union": max(A, A^T); "mutual":
    min(A, A^T) on pairs listed both ways).

    Args:
        features: (B, N, C), finite; gradients flow to it, to ``sigma`` and ``metric``.
        k: neighbours per node before symmetrisation, 1 <= k <= N - 1.
        max_degree: optional degree cap after symmetrisation (see ``symmetrize``);
            worth setting for "union" on high-dimensional features, whose hubs
            otherwise set the padded width K'.

    Returns:
        NeighborGraph (B, N, K') with K' the largest degree after symmetrisation
        (>= k for "union", <= k for "mutual").
    """
    check_features(features)
    # Fail before the quadratic search, not after it.
    if affinity not in AFFINITY_KINDS:
        raise ValueError(f"affinity must be one of {AFFINITY_KINDS}, found {affinity!r}")
    if affinity == "gaussian":
        if sigma is None:
            raise ValueError("sigma must be given for the 'gaussian' affinity, found None")
        check_scale(sigma, "sigma", features.shape[0])
    if affinity == "self_tuning" and (
        isinstance(scale_neighbor, bool)
        or not isinstance(scale_neighbor, int)
        or not 1 <= scale_neighbor <= k
    ):
        raise ValueError(
            f"scale_neighbor must be an int in [1, k] = [1, {k}], found {scale_neighbor!r}"
        )
    if mode not in SYMMETRIZE_MODES:
        raise ValueError(f"mode must be one of {SYMMETRIZE_MODES}, found {mode!r}")
    with torch.no_grad():
        space = apply_metric(features.detach(), None if metric is None else metric.detach())
        if affinity == "cosine":
            space = normalize_features(space)
    index = knn_indices(space, k, chunk_size=chunk_size)
    weight = edge_affinity(
        features,
        index,
        affinity,
        sigma=sigma,
        metric=metric,
        scale_neighbor=scale_neighbor,
        cosine_mode=cosine_mode,
    )
    return symmetrize(index, weight, mode, max_degree)
