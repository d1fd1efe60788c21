"""Graphs on the pixels of a feature map: local windows, optionally plus global kNN.

Pixel p = (y, x) of an (h, w) map is node y * w + x. The window graph links p
to every pixel p + o for the offsets o of a window of radius r: the square
(2r + 1)^2 - 1 offsets, or the disk |o|^2 <= r^2. Its weight is bilateral,

    w_pq = exp(-||M (f_p - f_q)||^2 / (2 sigma_f^2) - ||p - q||^2 / (2 sigma_x^2)),

the spatial factor being left out when ``sigma_spatial`` is None. Slot j of every
row holds offset j, so the neighbour lists have K = number of offsets; slots
whose pixel falls outside the image are padding (weight 0, index = the row).
The offset set is closed under negation and the weight symmetric in (p, q), so
the graph is symmetric by construction. Cost O(B N K C) time, O(B N (K + C))
memory: the feature distances come from a sampled sparse product, never from
an (N, N) matrix nor an (N, K, C) block.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor

from cheeger.ops.affinity import (
    _squared_distances,
    apply_metric,
    check_features,
    check_scale,
    gaussian_kernel,
)
from cheeger.ops.graph import NeighborGraph, graph_union
from cheeger.ops.knn import knn_graph

WindowShape = Literal["square", "disk"]
WINDOW_SHAPES = ("square", "disk")


def window_offsets(
    radius: int, window: WindowShape = "square", device: torch.device | str | None = None
) -> Tensor:
    """Offsets (dy, dx) of a window without its centre, int64 (K, 2), in raster order.

    Raster order makes the list centrally symmetric: offset K - 1 - j is -(offset j).
    """
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be an int >= 1, found {radius!r}")
    if window not in WINDOW_SHAPES:
        raise ValueError(f"window must be one of {WINDOW_SHAPES}, found {window!r}")
    span = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    keep = (dy != 0) | (dx != 0)
    if window == "disk":
        keep &= dy * dy + dx * dx <= radius * radius
    return torch.stack([dy[keep], dx[keep]], dim=-1)


def grid_neighbors(
    height: int,
    width: int,
    radius: int,
    window: WindowShape = "square",
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Window neighbour lists of an (height, width) grid.

    Returns:
        index: int64 (N, K), N = height * width; out-of-image slots hold the row itself.
        inside: bool (N, K), whether slot j's pixel lies in the image.
        offsets: int64 (K, 2), the (dy, dx) of each slot (``window_offsets``).
    """
    device = str(torch.device(device or "cpu"))
    index, inside, offsets, _ = _cached_grid_neighbors(height, width, radius, window, device)
    return index.clone(), inside.clone(), offsets.clone()


@functools.lru_cache(maxsize=8)
def _cached_grid_neighbors(
    height: int, width: int, radius: int, window: str, device: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The window lists plus each slot's reverse slot, built once per map size.

    ``mirror`` (N K,): slot j of pixel p (offset o_j) is listed back by slot K - 1 - j
    of pixel p + o_j (raster order makes offset K - 1 - j equal to -o_j); an
    out-of-image slot is its own mirror. Shared between calls: never modify.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, found ({height}, {width})")
    offsets = window_offsets(radius, window, device)
    rows = torch.arange(height, device=device).view(height, 1, 1)
    cols = torch.arange(width, device=device).view(1, width, 1)
    target_rows = rows + offsets[:, 0]
    target_cols = cols + offsets[:, 1]
    inside = (
        (target_rows >= 0) & (target_rows < height) & (target_cols >= 0) & (target_cols < width)
    )
    own = (rows * width + cols).expand_as(inside)
    index = torch.where(inside, target_rows * width + target_cols, own)
    num_slots = offsets.shape[0]
    slot = torch.arange(num_slots, device=device)
    mirror = torch.where(inside, index * num_slots + (num_slots - 1 - slot), own * num_slots + slot)
    return (
        index.reshape(-1, num_slots),
        inside.reshape(-1, num_slots),
        offsets,
        mirror.reshape(-1),
    )


def grid_graph(
    features: Tensor,
    radius: int,
    sigma_feature: Tensor | float,
    sigma_spatial: Tensor | float | None = None,
    *,
    window: WindowShape = "square",
    metric: Tensor | None = None,
    k_global: int = 0,
    max_degree: int | None = None,
) -> NeighborGraph:
    """Bilateral window graph of a feature map, optionally merged with global kNN edges.

    Args:
        features: (B, C, h, w), finite.
        radius: window radius r >= 1 (pixels).
        sigma_feature: feature bandwidth, scalar or (B,), > 0, differentiable.
        sigma_spatial: spatial bandwidth in pixels, scalar or (B,), > 0, or None for no
            spatial factor.
        window: "square" ((2r + 1)^2 - 1 neighbours) or "disk" (|o| <= r).
        metric: learned metric for the feature term, (C,) or (r', C).
        k_global: when > 0, each pixel also gets edges to its k_global nearest pixels
            in feature space anywhere in the map (``knn_graph``, quadratic in N),
            weighted by the feature factor alone, and the two graphs are merged by
            ``graph_union`` (max weight on shared edges).
        max_degree: degree cap of the merged graph (``symmetrize``); only used with
            global edges, whose hubs would otherwise set K.

    Returns:
        NeighborGraph (B, h w, K): without global edges K is the number of window
        offsets and slot j holds offset j; with them, rows are repacked by
        neighbour id and K is the largest merged degree.
    """
    if not isinstance(features, Tensor) or features.dim() != 4:
        found = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be (B, C, h, w), found {found}")
    batch, channels, height, width = features.shape
    if height * width == 0:
        raise ValueError(f"features must have h, w >= 1, found (h, w) = ({height}, {width})")
    sigma_feature = check_scale(sigma_feature, "sigma_feature", batch)
    if sigma_spatial is not None:
        sigma_spatial = check_scale(sigma_spatial, "sigma_spatial", batch)
    if isinstance(k_global, bool) or not isinstance(k_global, int) or k_global < 0:
        raise ValueError(f"k_global must be an int >= 0, found {k_global!r}")
    if k_global > height * width - 1:
        raise ValueError(
            f"k_global must be <= N - 1 = {height * width - 1} (N = h w), found {k_global}"
        )
    nodes = features.flatten(2).transpose(1, 2)  # (B, N, C)
    check_features(nodes)
    index, inside, offsets, mirror = _cached_grid_neighbors(
        height, width, radius, window, str(features.device)
    )
    index = index.unsqueeze(0).expand(batch, -1, -1)
    if batch > 1:
        stride = index.shape[1] * index.shape[2]
        shift = torch.arange(batch, device=features.device).view(-1, 1) * stride
        mirror = (mirror.unsqueeze(0) + shift).reshape(-1)
    squared = _squared_distances(apply_metric(nodes, metric), index, mirror)
    # Out-of-image slots (and, without a spatial term, nothing else) are zeroed through
    # the per-slot factor, so the (B, N, K) weights take one exp and one product.
    slot_factor = inside.to(features.dtype)
    if sigma_spatial is not None:
        step_sq = (offsets * offsets).sum(dim=-1).to(features.dtype)  # (K,)
        spatial = gaussian_kernel(step_sq.expand(batch, -1), sigma_spatial)  # (B, K)
        slot_factor = slot_factor * spatial.unsqueeze(1)  # (B, N, K)
    weight = gaussian_kernel(squared, sigma_feature) * slot_factor
    local = NeighborGraph(index.contiguous(), weight)
    if k_global == 0:
        return local
    distant = knn_graph(
        nodes, k_global, affinity="gaussian", sigma=sigma_feature, metric=metric, mode="union"
    )
    return graph_union(local, distant, max_degree=max_degree)
