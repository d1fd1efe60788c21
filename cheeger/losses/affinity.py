"""Affinity supervision: teach the head's graph where the label boundaries are.

Each edge weight w_pq in [0, 1] of the head's graph is read as the probability that p
and q carry the same label, and scored by binary cross-entropy against 1[y_p = y_q]
(labels at the graph's resolution by nearest neighbour; edges touching the ignore label
and padding slots left out; ``cheeger.metrics.edges.edge_targets``). Same-label edges
outnumber boundary-crossing ones by far, so by default (``balanced``) the two kinds
are averaged separately and the two means averaged, which keeps the boundary edges'
half of the signal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import aux_entry
from cheeger.metrics.edges import edge_targets
from cheeger.ops.graph import NeighborGraph


class AffinitySupervision(SegmentationLoss):
    """BCE of the graph's edge weights against same-label targets (module docstring).

    Reads ``aux['graph']`` and ``aux['graph_size']`` (head=spectral, any mode).

    Args:
        ignore_index: label whose edges are left out.
        balanced: average same-label and different-label edges separately.
        eps: weights are clamped to [eps, 1 - eps] inside the logarithms.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux) -> scalar
    """

    reads_aux = True  # needs the head's auxiliaries (see SegmentationModule._step)
    term = "affinity"

    def __init__(
        self, ignore_index: int = IGNORE_INDEX, balanced: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if not 0.0 < eps < 0.5:
            raise ValueError(f"loss affinity eps must be in (0, 0.5), found {eps}")
        self.ignore_index = ignore_index
        self.balanced = bool(balanced)
        self.eps = float(eps)

    def forward(self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None) -> Tensor:
        graph = aux_entry(aux, "graph", self.term)
        size = aux_entry(aux, "graph_size", self.term)
        if not isinstance(graph, NeighborGraph):
            raise ValueError(f"aux['graph'] must be a NeighborGraph, found {type(graph).__name__}")
        weight, same, valid = edge_targets(graph, target, size, self.ignore_index)
        weight = weight.clamp(self.eps, 1.0 - self.eps)
        positive = -torch.log(weight)
        negative = -torch.log1p(-weight)
        same_edges, different_edges = valid & same, valid & ~same
        if not self.balanced:
            loss = torch.where(same, positive, negative)[valid]
            return loss.mean() if loss.numel() else weight.sum() * 0.0
        means = [
            values[mask].mean()
            for values, mask in ((positive, same_edges), (negative, different_edges))
            if bool(mask.any())
        ]
        return torch.stack(means).mean() if means else weight.sum() * 0.0
