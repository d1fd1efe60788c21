"""Learned pixel affinities: feature map (B, C, h, w) -> NeighborGraph over its h w pixels.

These modules own the parameters of the graph (the ``affinity`` config group): a
bandwidth σ (stored as log σ, so it stays positive) and a metric M, with
d(x, y) = ||M (x - y)||. ``metric="diagonal"`` learns one scale per channel (M (C,)),
``"low_rank"`` a projection (r, C), ``"none"`` fixes M = I. The metric starts at
I / √C, so squared distances start as per-channel means and σ = 1 is a sensible
initial bandwidth for normalised features of any width. The math lives in
``cheeger.ops`` (``grid_graph``, ``knn_graph``); the modules only hold parameters.

Two graph shapes:

* :class:`GridAffinity` (``grid_bilateral``): each pixel linked to its window
  neighbours with a bilateral weight; O(N K C), the default at full resolution.
* :class:`KnnAffinity` (``gaussian``, ``self_tuning``, ``cosine``, ``learned_metric``):
  each pixel linked to its ``knn`` nearest pixels in feature space anywhere in the map.
  The exact search is quadratic in N (0.7 s for N = 16k, C = 64 on 2 CPU cores), so it
  suits coarse feature maps or GPUs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cheeger.ops.affinity import apply_metric
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.grid import WINDOW_SHAPES, grid_graph
from cheeger.ops.knn import knn_graph

METRICS = ("none", "diagonal", "low_rank")
KERNELS = ("gaussian", "self_tuning", "cosine")


class PixelAffinity(nn.Module):
    """Shared parameters: learned bandwidth and metric.

    Args:
        in_channels: C, the feature width (filled in by the head).
        sigma: initial bandwidth σ > 0.
        learn_sigma: make σ a parameter (else a buffer).
        metric: "none", "diagonal" or "low_rank".
        metric_rank: r for "low_rank" (default C).
    """

    uses_sigma = True

    def __init__(
        self,
        in_channels: int,
        sigma: float = 1.0,
        learn_sigma: bool = True,
        metric: str = "diagonal",
        metric_rank: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"affinity in_channels must be >= 1, found {in_channels}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"affinity.sigma must be a finite number > 0, found {sigma!r}")
        if metric not in METRICS:
            raise ValueError(f"affinity.metric must be one of {METRICS}, found {metric!r}")
        self.in_channels = in_channels
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma and self.uses_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        scale = 1.0 / math.sqrt(in_channels)
        if metric == "diagonal":
            self.metric = nn.Parameter(torch.full((in_channels,), scale))
        elif metric == "low_rank":
            rank = in_channels if metric_rank is None else metric_rank
            if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank:
                raise ValueError(f"affinity.metric_rank must be an int >= 1, found {rank!r}")
            # Rows of a scaled identity (rank <= C) or identity plus small noise rows.
            init = torch.zeros(rank, in_channels)
            rows = min(rank, in_channels)
            init[:rows, :rows] = torch.eye(rows)
            if rank > in_channels:
                init[in_channels:] = 0.1 * torch.randn(rank - in_channels, in_channels)
            self.metric = nn.Parameter(init * scale)
        else:
            self.metric = None

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    def forward(self, features: Tensor) -> NeighborGraph:
        raise NotImplementedError

    def _metric(self, dtype: torch.dtype) -> Tensor | None:
        return None if self.metric is None else self.metric.to(dtype)

    def map_features(self, nodes: Tensor) -> Tensor:
        """Features (B, N, C) as the affinity measures them: M x per node."""
        return apply_metric(nodes, self._metric(nodes.dtype))


class GridAffinity(PixelAffinity):
    """Bilateral window graph (``cheeger.ops.grid.grid_graph``) with learned σ and metric.

    w_pq = exp(-||M (f_p - f_q)||² / (2 σ²) - ||p - q||² / (2 σ_x²)) for |p - q| within
    ``radius`` (square or disk window); ``k_global`` > 0 adds each pixel's nearest
    pixels in feature space (quadratic cost), capped at ``max_degree``.

    Shapes:
        (B, C, h, w) -> NeighborGraph (B, h w, K)
    """

    def __init__(
        self,
        in_channels: int,
        radius: int = 1,
        sigma: float = 1.0,
        sigma_spatial: float | None = None,
        window: str = "square",
        learn_sigma: bool = True,
        metric: str = "diagonal",
        metric_rank: int | None = None,
        k_global: int = 0,
        max_degree: int | None = None,
    ) -> None:
        super().__init__(in_channels, sigma, learn_sigma, metric, metric_rank)
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"affinity.radius must be an int >= 1, found {radius!r}")
        if window not in WINDOW_SHAPES:
            raise ValueError(f"affinity.window must be one of {WINDOW_SHAPES}, found {window!r}")
        if sigma_spatial is not None and not sigma_spatial > 0:
            raise ValueError(f"affinity.sigma_spatial must be null or > 0, found {sigma_spatial}")
        self.radius = radius
        self.sigma_spatial = sigma_spatial
        self.window = window
        self.k_global = k_global
        self.max_degree = max_degree

    def forward(self, features: Tensor) -> NeighborGraph:
        return grid_graph(
            features,
            self.radius,
            self.sigma.to(features.dtype),
            self.sigma_spatial,
            window=self.window,
            metric=self._metric(features.dtype),
            k_global=self.k_global,
            max_degree=self.max_degree,
        )


class KnnAffinity(PixelAffinity):
    """Symmetric kNN graph over all pixels (``cheeger.ops.knn.knn_graph``).

    Args:
        kernel: "gaussian" (learned σ), "self_tuning" (local scales from the
            ``scale_neighbor``-th neighbour; no σ) or "cosine" (no σ).
        knn: neighbours per pixel before symmetrisation.
        mode: "union" or "mutual" symmetrisation.
        max_degree: degree cap after symmetrisation (hubs; None: no cap).

    Shapes:
        (B, C, h, w) -> NeighborGraph (B, h w, K')
    """

    def __init__(
        self,
        in_channels: int,
        knn: int = 8,
        kernel: str = "gaussian",
        sigma: float = 1.0,
        learn_sigma: bool = True,
        metric: str = "diagonal",
        metric_rank: int | None = None,
        mode: str = "union",
        max_degree: int | None = None,
        scale_neighbor: int = 7,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"affinity.kernel must be one of {KERNELS}, found {kernel!r}")
        self.uses_sigma = kernel == "gaussian"
        super().__init__(in_channels, sigma, learn_sigma, metric, metric_rank)
        if isinstance(knn, bool) or not isinstance(knn, int) or knn < 1:
            raise ValueError(f"knn must be an int >= 1, found {knn!r}")
        self.knn = knn
        self.kernel = kernel
        self.mode = mode
        self.max_degree = max_degree
        self.scale_neighbor = min(scale_neighbor, knn)

    def forward(self, features: Tensor) -> NeighborGraph:
        nodes = features.flatten(2).transpose(1, 2)
        if self.knn > nodes.shape[1] - 1:
            raise ValueError(
                f"knn={self.knn} needs more than knn pixels, but the feature map "
                f"{tuple(features.shape[-2:])} has only {nodes.shape[1]}"
            )
        return knn_graph(
            nodes,
            self.knn,
            affinity=self.kernel,
            sigma=self.sigma.to(features.dtype) if self.uses_sigma else None,
            metric=self._metric(features.dtype),
            scale_neighbor=self.scale_neighbor,
            mode=self.mode,
            max_degree=self.max_degree,
        )
