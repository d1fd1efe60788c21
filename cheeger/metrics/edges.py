"""Graph quality against the labels: do a head's edge weights separate the segments?

For a graph over pixels (a spectral head's ``aux["graph"]`` on an (h, w) grid), each
edge (p, q) is labelled *same* when y_p = y_q, with the labels taken at the graph's
resolution by nearest-neighbour sampling; edges touching the ignore label and
padding slots are left out (:func:`edge_targets`). A good graph gives same-label edges
high weights and boundary-crossing edges low ones: the edge AUC is the probability
that a random same-label edge outweighs a random different-label one (ties count
half), 0.5 for a graph blind to the segments, 1 for one that cuts exactly along them.

``EdgeAUC`` accumulates two histograms of weights in [0, 1] (``bins`` bins) as
``sum``-reduced states, so data-parallel runs give the single-process value; the AUC
of the histograms equals the exact AUC of the weights rounded to bin centres.

Example:
    >>> import torch
    >>> same = torch.tensor([0.9, 0.8, 0.7]); different = torch.tensor([0.1, 0.75])
    >>> round(float(binned_auc(weight_histogram(same, 100), weight_histogram(different, 100))), 4)
    0.8333
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from cheeger.data.classes import IGNORE_INDEX
from cheeger.ops.graph import NeighborGraph


def labels_at(target: Tensor, size: tuple[int, int]) -> Tensor:
    """target (B, H, W) integer labels at (h, w) by nearest-neighbour sampling, (B, h w)."""
    if target.dim() != 3:
        raise ValueError(f"target must be (B, H, W), found {tuple(target.shape)}")
    if tuple(target.shape[-2:]) != tuple(size):
        target = F.interpolate(target.unsqueeze(1).float(), size=tuple(size), mode="nearest")
        target = target.squeeze(1).long()
    return target.flatten(1)


def edge_targets(
    graph: NeighborGraph,
    target: Tensor,
    size: tuple[int, int],
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-slot same-label targets of a pixel graph.

    Args:
        graph: NeighborGraph (B, N, K) over an (h, w) grid, N = h w.
        target: (B, H, W) labels.
        size: (h, w) of the graph.
        ignore_index: label whose edges are left out.

    Returns:
        weight (B, N, K) (the graph's, differentiable), same (B, N, K) bool, valid
        (B, N, K) bool: a real edge (not a padding slot) between two labelled pixels.
    """
    batch, num_nodes, slots = graph.index.shape
    if size[0] * size[1] != num_nodes or target.shape[0] != batch:
        raise ValueError(
            f"graph over {num_nodes} nodes (B = {batch}) cannot be an {tuple(size)} grid of "
            f"target {tuple(target.shape)}"
        )
    labels = labels_at(target, size).to(graph.index.device)  # (B, N)
    neighbour = labels.gather(1, graph.index.reshape(batch, -1)).view(batch, num_nodes, slots)
    own = labels.unsqueeze(-1).expand_as(neighbour)
    rows = torch.arange(num_nodes, device=graph.index.device).view(1, -1, 1)
    valid = (graph.index != rows) & (own != ignore_index) & (neighbour != ignore_index)
    return graph.weight, own == neighbour, valid


def weight_histogram(weights: Tensor, bins: int) -> Tensor:
    """Counts of weights in [0, 1] over ``bins`` equal bins (values clamped), float64."""
    index = (weights.detach().double().clamp(0.0, 1.0) * bins).long().clamp_max(bins - 1)
    return torch.bincount(index.flatten(), minlength=bins).double()


def binned_auc(same: Tensor, different: Tensor) -> Tensor:
    """P(w_same > w_different) + P(tie) / 2 from two histograms (bins,); NaN if one is empty."""
    total = same.sum() * different.sum()
    if total == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    below = torch.cumsum(different, 0) - different  # different-label counts in lower bins
    return ((same * below).sum() + 0.5 * (same * different).sum()) / total


class EdgeAUC(Metric):
    """Dataset edge AUC of a pixel graph against the labels (module docstring).

    ``update(graph, target, size)``; ``compute()`` -> {``edge_auc``: scalar} (NaN before
    any edge of both kinds was seen).
    """

    full_state_update = False

    def __init__(self, ignore_index: int = IGNORE_INDEX, bins: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, found {bins!r}")
        self.ignore_index = ignore_index
        self.bins = bins
        zeros = torch.zeros(bins, dtype=torch.float64)
        self.add_state("same", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("different", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, graph: NeighborGraph, target: Tensor, size: tuple[int, int]) -> None:
        weight, same, valid = edge_targets(graph, target, size, self.ignore_index)
        weight = weight.detach()
        self.same += weight_histogram(weight[valid & same], self.bins).to(self.same.device)
        self.different += weight_histogram(weight[valid & ~same], self.bins).to(self.same.device)

    def compute(self) -> dict[str, Tensor]:
        return {"edge_auc": binned_auc(self.same.cpu(), self.different.cpu())}
