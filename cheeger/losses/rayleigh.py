"""Rayleigh spectral consistency: class probabilities should be smooth on the head's graph.

With W the head's affinity over the h w feature-map pixels, D its degree matrix
and P (N, C) the class probabilities at the nodes (softmax of the head's
feature-resolution logits), the term is a Rayleigh quotient

* ``"unnormalized"`` (L = D - W):
      R = tr(P^T L P) / tr(P^T P);
* ``"symmetric"`` (L_sym = I - D^-1/2 W D^-1/2): the null space of L_sym is
  spanned by D^1/2 1_S for each connected component S, not by 1_S, so P is
  scaled first, Q = D^1/2 P, and
      R = tr(Q^T L_sym Q) / tr(Q^T Q) = tr(P^T (D - W) P) / tr(P^T D P),
  the relaxed normalised cut of the soft partition P;
* ``"random_walk"`` (L_rw = I - D^-1 W, not symmetric): the same D-weighted
  quotient, tr(P^T D L_rw P) / tr(P^T D P), which is the expression above.

So the numerator is always the Dirichlet energy
tr(P^T (D - W) P) = 1/2 sum_{i,l} W_il ||P_i - P_l||^2 and only the denominator
depends on the kind. R = 0 exactly when P is constant on each connected
component (for the normalised kinds, on each component with an edge: an
isolated node has degree 0 and adds 0 to both traces). One sparse product,
O(B N K C); no N x N matrix is formed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import aux_entry
from cheeger.ops.graph import NeighborGraph, degree
from cheeger.ops.laplacian import LaplacianKind, laplacian_kind, laplacian_matvec


def rayleigh_quotient(
    graph: NeighborGraph,
    probabilities: Tensor,
    kind: LaplacianKind | str = "symmetric",
    eps: float = 1e-12,
) -> Tensor:
    """Per-image Rayleigh quotient of node signals, (B,).

    Args:
        graph: symmetric NeighborGraph (B, N, K).
        probabilities: P, (B, N, C) with the dtype of ``graph.weight``.
        kind: "unnormalized" divides by tr(P^T P); "symmetric" and "random_walk"
            by tr(P^T D P) (see the module docstring).
        eps: the denominator is clamped to at least ``eps``.

    Returns:
        (B,) tr(P^T (D - W) P) / max(denominator, eps); differentiable in P and
        in the graph weights.
    """
    kind = laplacian_kind(kind)
    energy = (probabilities * laplacian_matvec(graph, probabilities, "unnormalized")).sum((1, 2))
    squared = probabilities.square().sum(-1)  # (B, N)
    if kind is not LaplacianKind.UNNORMALIZED:
        squared = squared * degree(graph)
    return energy / squared.sum(-1).clamp_min(eps)


def node_probabilities(feature_logits: Tensor) -> Tensor:
    """softmax over classes of (B, C, h, w) logits, as node signals (B, h w, C), node y w + x."""
    return torch.softmax(feature_logits, dim=1).flatten(2).transpose(1, 2)


class RayleighConsistency(SegmentationLoss):
    """Mean over the batch of ``rayleigh_quotient`` of the head's feature-resolution
    class probabilities on the head's graph.

    Reads from ``aux`` (provided by head=spectral): ``graph`` (NeighborGraph over the
    h w feature-map pixels), ``laplacian`` (its kind) and ``feature_logits``
    (B, C, h, w). Raises ValueError naming a missing key.

    Args:
        num_classes: when given, the channel count ``feature_logits`` must have.
        detach_graph: stop the gradient into the graph weights, so that the term
            only smooths the predictions. With gradient (default) it also lowers
            the affinity across predicted boundaries. For "unnormalized" the
            quotient scales with W, so its gradient alone pushes all weights to 0.
        eps: denominator guard.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux) -> scalar
    """

    reads_aux = True  # needs the head's auxiliaries (see SegmentationModule._step)

    term = "rayleigh"

    def __init__(
        self, num_classes: int | None = None, detach_graph: bool = False, eps: float = 1e-12
    ) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"loss eps must be > 0, found {eps}")
        self.num_classes = num_classes
        self.detach_graph = detach_graph
        self.eps = eps

    def forward(self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None) -> Tensor:
        graph = aux_entry(aux, "graph", self.term)
        kind = aux_entry(aux, "laplacian", self.term)
        feature_logits = aux_entry(aux, "feature_logits", self.term)
        if not isinstance(graph, NeighborGraph):
            raise ValueError(f"aux['graph'] must be a NeighborGraph, found {type(graph).__name__}")
        if not isinstance(feature_logits, Tensor) or feature_logits.dim() != 4:
            found = getattr(feature_logits, "shape", type(feature_logits).__name__)
            raise ValueError(f"aux['feature_logits'] must be (B, C, h, w), found {found}")
        batch, channels, height, width = feature_logits.shape
        if self.num_classes is not None and channels != self.num_classes:
            raise ValueError(
                f"aux['feature_logits'] has {channels} channels, expected "
                f"num_classes={self.num_classes}"
            )
        if (graph.batch_size, graph.num_nodes) != (batch, height * width):
            raise ValueError(
                f"aux['graph'] must have (B, N) = ({batch}, {height * width}) for "
                f"feature_logits of shape {tuple(feature_logits.shape)}, found "
                f"({graph.batch_size}, {graph.num_nodes})"
            )
        if self.detach_graph:
            graph = NeighborGraph.derived(graph.index, graph.weight.detach())
        probabilities = node_probabilities(feature_logits).to(graph.weight.dtype)
        return rayleigh_quotient(graph, probabilities, kind, self.eps).mean()
