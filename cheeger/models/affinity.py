"""Learned pixel affinities: feature map (B, C, h, w) -> NeighborGraph over its h w pixels.

These modules own the parameters of the graph (the ``affinity`` config group): a
bandwidth σ (stored as log σ, so it stays positive) and a metric M, with
d(x, y) = ||M (x - y)||. ``metric="diagonal"`` learns one scale per channel (M (C,)),
``"low_rank"`` a projection (r, C), ``"none"`` fixes M = I. The metric starts at
I / √C, so squared distances start as per-channel means and σ = 1 is a sensible
initial bandwidth for normalised features of any width. The math lives in
``cheeger.ops`` (``grid_graph``, ``knn_graph``); the modules only hold parameters.

The guide (``guide``) is what the graph measures: ``features`` (the backbone's feature
map), ``image`` (the input image's colours; the spatial term comes from the window), or
``image+features`` (both, concatenated, each channel weighted by the learned metric).
The head chooses the graph's resolution (the feature map for ``head.mode=embedding``,
the input for ``logits``/``upsample``) and :meth:`PixelAffinity.guide_map` resamples
the guide to it (area averaging for the image, bilinear for the features).

Every graph carries its metric-mapped node features and bandwidth
(``NeighborGraph.node_features``/``bandwidth``) for solvers that rebuild a dense kernel.

Two graph shapes:

* :class:`GridAffinity` (``grid_bilateral``): each pixel linked to its window
  neighbours with a bilateral weight; O(N K C), the default at full resolution.
* :class:`KnnAffinity` (``gaussian``, ``self_tuning``, ``cosine``, ``learned_metric``):
  each pixel linked to its ``knn`` nearest pixels in feature space anywhere in the map.
  The exact search is quadratic in N (0.7 s for N = 16k, C = 64 on 2 CPU cores), so it
  suits coarse feature maps or GPUs.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cheeger.ops.affinity import apply_metric
from cheeger.ops.checks import check_int
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.grid import WINDOW_SHAPES, grid_graph
from cheeger.ops.knn import knn_graph

METRICS = ("none", "diagonal", "low_rank")
GUIDES = ("features", "image", "image+features")
KERNELS = ("gaussian", "self_tuning", "cosine")


class PixelAffinity(nn.Module):
    """Shared parameters: learned bandwidth and metric.

    Args:
        in_channels: C, the feature width (filled in by the head).
        sigma: initial bandwidth σ > 0.
        learn_sigma: make σ a parameter (else a buffer).
        metric: "none", "diagonal" or "low_rank".
        metric_rank: r for "low_rank" (default: the guide's width).
        guide: "features", "image" or "image+features" (module docstring).
        image_channels: channels of the input image (filled in by the head).
    """

    uses_sigma = True

    def __init__(
        self,
        in_channels: int,
        sigma: float = 1.0,
        learn_sigma: bool = True,
        metric: str = "diagonal",
        metric_rank: int | None = None,
        guide: str = "features",
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"affinity in_channels must be >= 1, found {in_channels}")
        if guide not in GUIDES:
            raise ValueError(f"affinity.guide must be one of {GUIDES}, found {guide!r}")
        self.guide = guide
        self.feature_channels = in_channels
        self.image_channels = image_channels
        # The metric measures the guide: its width is what the guide concatenates.
        in_channels = {
            "features": in_channels,
            "image": image_channels,
            "image+features": image_channels + in_channels,
        }[guide]
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

    @property
    def uses_image(self) -> bool:
        return self.guide != "features"

    def guide_map(self, features: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        """The guide at the graph's resolution: (B, C_guide, *size).

        features (B, C, h, w) and image (B, 3, H, W) (None when the guide is
        ``features``) are resampled to ``size``.
        """
        parts = []
        if self.uses_image:
            if image is None:
                raise ValueError(
                    f"affinity.guide={self.guide} needs the input image, but the head got "
                    "none (call head(features, image), or use affinity.guide=features)"
                )
            parts.append(_resample(image.to(features.dtype), size, "area"))
        if self.guide != "image":
            parts.append(_resample(features, size, "bilinear"))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, guide: Tensor) -> NeighborGraph:
        """guide (B, C_guide, h, w) (``guide_map``) -> NeighborGraph (B, h w, K)."""
        raise NotImplementedError

    def _attach(self, graph: NeighborGraph, guide: Tensor) -> NeighborGraph:
        """The graph with its mapped node features and bandwidth (for Nyström)."""
        nodes = self.map_features(guide.flatten(2).transpose(1, 2))
        sigma = self.sigma.to(guide.dtype) if self.uses_sigma else None
        return dataclasses.replace(graph, node_features=nodes, bandwidth=sigma)

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
        guide: str = "features",
        image_channels: int = 3,
    ) -> None:
        super().__init__(
            in_channels, sigma, learn_sigma, metric, metric_rank, guide, image_channels
        )
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

    def forward(self, guide: Tensor) -> NeighborGraph:
        graph = grid_graph(
            guide,
            self.radius,
            self.sigma.to(guide.dtype),
            self.sigma_spatial,
            window=self.window,
            metric=self._metric(guide.dtype),
            k_global=self.k_global,
            max_degree=self.max_degree,
        )
        return self._attach(graph, guide)


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
        guide: str = "features",
        image_channels: int = 3,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"affinity.kernel must be one of {KERNELS}, found {kernel!r}")
        self.uses_sigma = kernel == "gaussian"
        super().__init__(
            in_channels, sigma, learn_sigma, metric, metric_rank, guide, image_channels
        )
        # The only check of knn (the top-level `knn` of the config is affinity.knn).
        self.knn = check_int("knn (affinity.knn)", knn, 1)
        self.kernel = kernel
        self.mode = mode
        self.max_degree = max_degree
        self.scale_neighbor = min(scale_neighbor, knn)

    def forward(self, guide: Tensor) -> NeighborGraph:
        nodes = guide.flatten(2).transpose(1, 2)
        if self.knn > nodes.shape[1] - 1:
            raise ValueError(
                f"knn={self.knn} needs more than knn pixels, but the graph's map "
                f"{tuple(guide.shape[-2:])} has only {nodes.shape[1]}"
            )
        graph = knn_graph(
            nodes,
            self.knn,
            affinity=self.kernel,
            sigma=self.sigma.to(guide.dtype) if self.uses_sigma else None,
            metric=self._metric(guide.dtype),
            scale_neighbor=self.scale_neighbor,
            mode=self.mode,
            max_degree=self.max_degree,
        )
        return self._attach(graph, guide)


def _resample(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """x (B, C, h, w) at ``size``: unchanged when equal, else area or bilinear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=tuple(size), mode="area")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
