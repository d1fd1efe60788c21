"""Edge affinities from node features.

Two forms of every distance: on pairs of feature rows (``squared_distance``,
any broadcastable leading shape) and on the slots of a neighbour list
(``edge_squared_distances``, features (B, N, C) and index (B, N, K)). The
kernels turn squared distances into weights in [0, 1]:

* Gaussian:         w_ij = exp(-d_ij^2 / (2 sigma^2)), sigma a scalar or one per batch.
* Self-tuning:      w_ij = exp(-d_ij^2 / (sigma_i sigma_j)), sigma_i the distance from i
                    to its m-th nearest candidate (Zelnik-Manor & Perona, 2004).
* Cosine:           ``"clamp"``: max(cos_ij, 0); ``"shift"``: (1 + cos_ij) / 2.

A learned metric d(x, y) = ||M (x - y)|| enters through ``metric``: a vector (C,)
for a diagonal M, or a matrix (r, C) (low rank r < C, or full r = C). Since
M (x - y) = M x - M y, the features are mapped once and Euclidean distances
taken afterwards.

Squared distances never pass through a square root, so gradients stay finite
at d = 0 (duplicate points). Slots whose index is their own row are padding
(see ``cheeger.ops.graph``) and get weight exactly 0 from every edge affinity.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cheeger.ops.graph import _EdgeInnerProduct

AffinityKind = Literal["gaussian", "self_tuning", "cosine"]
AFFINITY_KINDS = ("gaussian", "self_tuning", "cosine")
CosineMode = Literal["clamp", "shift"]
COSINE_MODES = ("clamp", "shift")

# Norm floor of the cosine normalisation (as in torch.nn.functional.normalize):
# a zero feature vector is mapped to 0 and has cosine 0 with everything.
_NORM_FLOOR = 1e-12


def check_features(features: Tensor, name: str = "features") -> None:
    """Raise ValueError unless ``features`` is a finite float (B, N, C) tensor with N >= 1."""
    if not isinstance(features, Tensor) or not features.is_floating_point():
        found = features.dtype if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a floating-point tensor, found {found}")
    if features.dim() != 3:
        raise ValueError(f"{name} must be (B, N, C), found shape {tuple(features.shape)}")
    if features.shape[1] == 0:
        raise ValueError(f"{name} must have at least one node (N >= 1), found N = 0")
    if features.shape[2] == 0:
        raise ValueError(f"{name} must have at least one channel (C >= 1), found C = 0")
    if not bool(torch.isfinite(features.detach()).all()):
        raise ValueError(f"{name} must be finite, found NaN or Inf entries")


def _check_index(index: Tensor, features: Tensor) -> None:
    batch, num_nodes, _ = features.shape
    if not isinstance(index, Tensor) or index.dtype != torch.int64 or index.dim() != 3:
        found = (index.dtype, tuple(index.shape)) if isinstance(index, Tensor) else type(index)
        raise ValueError(f"index must be an int64 tensor (B, N, K), found {found}")
    if index.shape[:2] != (batch, num_nodes):
        raise ValueError(
            f"index must be (B, N, K) with (B, N) = ({batch}, {num_nodes}) from features, "
            f"found {tuple(index.shape)}"
        )
    if index.numel():
        low, high = (int(v) for v in torch.aminmax(index))
        if low < 0 or high >= num_nodes:
            raise ValueError(
                f"index entries must lie in [0, N) = [0, {num_nodes}), found range [{low}, {high}]"
            )


def check_scale(sigma: Tensor | float, name: str = "sigma", batch: int | None = None) -> Tensor:
    """Validate a positive bandwidth: a Python number, a 0-d tensor or one value per batch.

    Returns a tensor (0-d, or (B,) when a per-batch vector was given).
    """
    if not isinstance(sigma, Tensor):
        sigma = torch.tensor(float(sigma), dtype=torch.float64)
    if sigma.dim() > 1 or (sigma.dim() == 1 and batch is not None and sigma.shape[0] != batch):
        raise ValueError(
            f"{name} must be a scalar or a vector of length B = {batch}, "
            f"found shape {tuple(sigma.shape)}"
        )
    values = sigma.detach()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be finite, found {values.tolist()}")
    if bool((values <= 0).any()):
        raise ValueError(f"{name} must be > 0, found minimum {float(values.min())}")
    return sigma


def apply_metric(features: Tensor, metric: Tensor | None = None) -> Tensor:
    """Map features (..., C) by M: ``features * M`` for M (C,), ``features @ M^T`` for M (r, C)."""
    if metric is None:
        return features
    channels = features.shape[-1]
    if not isinstance(metric, Tensor) or metric.dim() not in (1, 2) or metric.shape[-1] != channels:
        found = tuple(metric.shape) if isinstance(metric, Tensor) else type(metric).__name__
        raise ValueError(f"metric must be ({channels},) or (r, {channels}), found {found}")
    if not bool(torch.isfinite(metric.detach()).all()):
        raise ValueError("metric must be finite, found NaN or Inf entries")
    metric = metric.to(features.dtype)
    if metric.dim() == 1:
        return features * metric
    return features @ metric.t()


def normalize_features(features: Tensor) -> Tensor:
    """Rows scaled to unit length, x / max(|x|, 1e-12) (a zero row stays 0)."""
    norm_sq = (features * features).sum(dim=-1, keepdim=True)
    return features * torch.rsqrt(norm_sq.clamp_min(_NORM_FLOOR**2))


def squared_distance(x: Tensor, y: Tensor, metric: Tensor | None = None) -> Tensor:
    """||M (x - y)||^2 for pairs of rows x, y (..., C) (broadcast); shape (...).

    Computed from the difference itself (no cancellation); the gradient at x = y is 0.
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must share the channel size, found {x.shape[-1]} and {y.shape[-1]}"
        )
    difference = apply_metric(x - y, metric)
    return (difference * difference).sum(dim=-1)


def edge_squared_distances(features: Tensor, index: Tensor, metric: Tensor | None = None) -> Tensor:
    """Squared distances on the slots of a neighbour list.

    Args:
        features: (B, N, C), finite.
        index: int64 (B, N, K), entries in [0, N).
        metric: None, (C,) or (r, C); see the module docstring.

    Returns:
        (B, N, K), d2[b, i, j] = ||M (x_i - x_l)||^2 with l = index[b, i, j], >= 0.

    The inner products come from a sampled sparse product (memory O(B N (K + C)),
    no (N, K, C) gather), as |y_i|^2 + |y_l|^2 - 2 <y_i, y_l> on features centred per
    batch element (distances are translation invariant; centring shrinks the norms
    and with them the cancellation). Values within the rounding error of that sum,
    2 (C + 2) eps (|y_i|^2 + |y_l|^2), are set to 0 (zero gradient), so exact
    duplicates are at distance 0.
    """
    check_features(features)
    _check_index(index, features)
    return _squared_distances(apply_metric(features, metric), index)


def _squared_distances(mapped: Tensor, index: Tensor, mirror: Tensor | None = None) -> Tensor:
    """``edge_squared_distances`` of already mapped features, without input checks.

    ``mirror``: reverse-slot positions of a symmetric pattern (see ``_EdgeInnerProduct``).
    """
    # A constant shift: the mean is detached, the distances and their gradient unchanged.
    mapped = (mapped - mapped.detach().mean(dim=1, keepdim=True)).contiguous()
    batch, num_nodes, slots = index.shape
    norms = (mapped * mapped).sum(dim=-1)
    neighbour_norms = norms.gather(1, index.reshape(batch, num_nodes * slots))
    neighbour_norms = neighbour_norms.view(batch, num_nodes, slots)
    inner = _EdgeInnerProduct.apply(index, mapped, mapped, mirror)
    sum_of_norms = norms.unsqueeze(-1) + neighbour_norms
    squared = sum_of_norms - 2.0 * inner
    # The expansion's rounding error is at most 2 (C + 2) eps (|y_i|^2 + |y_l|^2); a value
    # below it cannot be told from 0 and is set to 0. Exact copies otherwise came out a few
    # ulps apart, and the self-tuning affinity, whose scales are then a few ulps too, gave
    # them weights anywhere in [exp(-1), 1] in float32 instead of 1.
    noise = 2.0 * (mapped.shape[-1] + 2) * torch.finfo(mapped.dtype).eps * sum_of_norms.detach()
    return torch.where(squared > noise, squared, torch.zeros_like(squared))


def _broadcast_per_batch(scale: Tensor, like: Tensor) -> Tensor:
    scale = scale.to(device=like.device, dtype=like.dtype)
    if scale.dim() == 1:
        return scale.view(-1, *([1] * (like.dim() - 1)))
    return scale


def gaussian_kernel(squared: Tensor, sigma: Tensor | float) -> Tensor:
    """exp(-squared / (2 sigma^2)); sigma a scalar or (B,) for ``squared`` of shape (B, ...)."""
    sigma = check_scale(sigma, "sigma", squared.shape[0] if squared.dim() else None)
    sigma = _broadcast_per_batch(sigma, squared)
    return torch.exp(-squared / (2.0 * sigma * sigma))


def _slot_is_edge(index: Tensor) -> Tensor:
    """(B, N, K) bool: the slot points at another node (self slots are padding)."""
    own = torch.arange(index.shape[1], device=index.device).view(1, -1, 1)
    return index != own


def gaussian_affinity(
    features: Tensor,
    index: Tensor,
    sigma: Tensor | float,
    metric: Tensor | None = None,
) -> Tensor:
    """Gaussian weights exp(-||M (x_i - x_l)||^2 / (2 sigma^2)) on the slots, (B, N, K).

    ``sigma``: a positive scalar or (B,) tensor; differentiable, like features and metric.
    """
    sigma = check_scale(sigma, "sigma", features.shape[0] if features.dim() == 3 else None)
    squared = edge_squared_distances(features, index, metric)
    return gaussian_kernel(squared, sigma) * _slot_is_edge(index)


def self_tuning_affinity(
    features: Tensor,
    index: Tensor,
    scale_neighbor: int = 7,
    metric: Tensor | None = None,
    min_scale: float = 1e-12,
) -> Tensor:
    """Locally scaled weights exp(-d_il^2 / (sigma_i sigma_l)) on the slots, (B, N, K).

    sigma_i^2 is the ``scale_neighbor``-th smallest squared distance among row i's
    candidate slots (pass a kNN list, e.g. ``knn_indices``; padding slots are
    skipped, and a row with fewer candidates uses its farthest one), floored at
    ``min_scale`` so that duplicate points (sigma_i = 0) stay finite. The product
    sigma_i sigma_l is formed as sqrt(sigma_i^2 sigma_l^2), whose argument is
    >= min_scale^2 > 0, so the gradient has no 0/0.
    """
    if isinstance(scale_neighbor, bool) or not isinstance(scale_neighbor, int):
        raise ValueError(f"scale_neighbor must be an int, found {scale_neighbor!r}")
    slots = index.shape[-1] if isinstance(index, Tensor) and index.dim() == 3 else None
    if slots is not None and not 1 <= scale_neighbor <= slots:
        raise ValueError(f"scale_neighbor must be in [1, K] = [1, {slots}], found {scale_neighbor}")
    if not min_scale > 0:
        raise ValueError(f"min_scale must be > 0, found {min_scale}")
    squared = edge_squared_distances(features, index, metric)
    is_edge = _slot_is_edge(index)
    candidates = squared.masked_fill(~is_edge, float("inf"))
    nearest = torch.topk(candidates, scale_neighbor, dim=-1, largest=False, sorted=True).values
    count = is_edge.sum(dim=-1, keepdim=True)
    pick = (count.clamp(max=scale_neighbor) - 1).clamp_min(0)
    scale_sq = nearest.gather(-1, pick).squeeze(-1)
    scale_sq = torch.where(count.squeeze(-1) > 0, scale_sq, torch.zeros_like(scale_sq))
    scale_sq = scale_sq.clamp_min(min_scale)
    batch, num_nodes, slots = index.shape
    neighbour_scale_sq = scale_sq.gather(1, index.reshape(batch, -1)).view(batch, num_nodes, slots)
    bandwidth = torch.sqrt(scale_sq.unsqueeze(-1) * neighbour_scale_sq)
    return torch.exp(-squared / bandwidth) * is_edge


def cosine_affinity(
    features: Tensor,
    index: Tensor,
    mode: CosineMode = "clamp",
    metric: Tensor | None = None,
) -> Tensor:
    """Cosine-similarity weights on the slots, (B, N, K).

    ``"clamp"``: max(cos, 0) (dissimilar pairs get no edge, sparse); ``"shift"``:
    (1 + cos) / 2 (every listed pair keeps a positive weight, smooth everywhere).
    Features are mapped by ``metric`` first; a zero vector has cosine 0 with all.
    """
    if mode not in COSINE_MODES:
        raise ValueError(f"mode must be one of {COSINE_MODES}, found {mode!r}")
    check_features(features)
    _check_index(index, features)
    unit = normalize_features(apply_metric(features, metric)).contiguous()
    cosine = _EdgeInnerProduct.apply(index, unit, unit, None).clamp(-1.0, 1.0)
    weight = cosine.clamp_min(0.0) if mode == "clamp" else 0.5 * (1.0 + cosine)
    return weight * _slot_is_edge(index)


def edge_affinity(
    features: Tensor,
    index: Tensor,
    kind: AffinityKind = "gaussian",
    *,
    sigma: Tensor | float | None = None,
    metric: Tensor | None = None,
    scale_neighbor: int = 7,
    cosine_mode: CosineMode = "clamp",
) -> Tensor:
    """Weights (B, N, K) of the named affinity: "gaussian" (needs ``sigma``),
    "self_tuning" (uses ``scale_neighbor``) or "cosine" (uses ``cosine_mode``)."""
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("sigma must be given for the 'gaussian' affinity, found None")
        return gaussian_affinity(features, index, sigma, metric)
    if kind == "self_tuning":
        return self_tuning_affinity(features, index, scale_neighbor, metric)
    if kind == "cosine":
        return cosine_affinity(features, index, cosine_mode, metric)
    raise ValueError(f"kind must be one of {AFFINITY_KINDS}, found {kind!r}")
