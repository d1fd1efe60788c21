"""SpectralHead: classify pixels through the spectrum of their own feature graph.

Pipeline, per image, at the backbone's full feature-map resolution (N = h w nodes):

1. optional Marchenko-Pastur denoising of the pixel features (``denoise``): keep the
   feature-covariance components above the MP bulk edge (``cheeger.ops.random_matrix``);
2. a learned affinity graph over the pixels (``affinity`` group: bandwidth and metric
   are parameters) and its Laplacian (``laplacian``: unnormalized, symmetric,
   random_walk);
3. the spectral filter h(L) applied to a learned projection V = P X of the features
   (``embed_dim`` channels), with h from the ``response`` group and the solver from the
   ``solver`` group: U h(Λ) Uᵀ V through the k smallest eigenpairs (dense, lanczos,
   nystrom) or a Chebyshev polynomial of h over the whole spectrum (chebyshev);
4. logits = 1x1 conv of [X, h(L) V] (the raw features keep the pixel detail, the
   filtered channels carry what the graph says about the segment), upsampled.

Sign and basis invariance. The embedding U h(Λ) Uᵀ V depends on the eigenvectors only
through U diag(h) Uᵀ, which is unchanged when a column flips sign and when the
columns of a repeated eigenvalue rotate among themselves (h is a function of λ, so it
is constant on the repeated block). No raw eigenvector reaches the classifier; the
tests flip and rotate eigenvectors and compare logits.

Auxiliaries (for the losses and the panels): ``graph``, ``laplacian``, ``eigenvalues``
(B, k), ``eigenvectors`` (B, k, h, w), ``response`` (B, k) (h at the eigenvalues),
``embedding`` (B, E, h, w), ``feature_logits`` (B, K, h, w) and ``noise_energy`` (B,),
the share of the response's mass on eigen-directions whose feature energy is at the
noise floor (see ``noise_mass``); the Chebyshev solver has no eigenpairs and returns
neither eigen keys nor ``noise_energy``.

The spectral part runs in ``dtype`` (float32 default, float64 for studies), outside any
autocast region: under ``trainer.precision=bf16-mixed``/``16-mixed`` the backbone's
half-precision features are cast up, the eigenpairs and the filter are computed in
``dtype``, and only the final 1x1 classifier runs under autocast. float64 is refused
on MPS, which has no float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cheeger.models.affinity import PixelAffinity
from cheeger.models.heads import SegmentationHead, upsample_logits
from cheeger.models.response import SpectralResponse
from cheeger.models.solvers import SpectralSolver
from cheeger.ops.chebyshev import exact_spectral_filter
from cheeger.ops.laplacian import LAPLACIAN_KINDS, lambda_max_bound
from cheeger.ops.random_matrix import (
    denoise_features,
    noise_floor,
    projected_snr,
    snr_threshold,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SpectralHead(SegmentationHead):
    """Spectral segmentation head (module docstring).

    Args:
        in_channels: C of the backbone features (filled in by the code).
        num_classes: K (filled in by the code).
        affinity: a partial ``PixelAffinity`` taking ``in_channels`` (``affinity`` group).
        solver: a ``SpectralSolver`` (``solver`` group).
        response: a ``SpectralResponse`` module (``response`` group).
        laplacian: "unnormalized", "symmetric" or "random_walk".
        k: eigenpairs computed by eigenpair solvers.
        embed_dim: E, channels of the filtered projection.
        denoise: MP-denoise the features before the affinity.
        noise_gate: multiply h by a gate that closes on noise-floor directions
            (eigenpair solvers only).
        gate_sharpness: slope of that gate in SNR units.
        dropout: dropout on the classifier input.
        dtype: "float32" or "float64" for the spectral computation.

    Shapes:
        forward(features (B, C, h, w), size (H, W)) -> logits (B, K, H, W), aux dict
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        affinity,
        solver: SpectralSolver,
        response: SpectralResponse,
        laplacian: str = "symmetric",
        k: int = 16,
        embed_dim: int = 16,
        denoise: bool = False,
        noise_gate: bool = False,
        gate_sharpness: float = 4.0,
        dropout: float = 0.0,
        dtype: str = "float32",
    ) -> None:
        super().__init__(in_channels, num_classes)
        if laplacian not in LAPLACIAN_KINDS:
            raise ValueError(f"laplacian must be one of {LAPLACIAN_KINDS}, found {laplacian!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, found {k!r}")
        if embed_dim < 1:
            raise ValueError(f"head.embed_dim must be >= 1, found {embed_dim}")
        if dtype not in DTYPES:
            raise ValueError(f"head.dtype must be one of {tuple(DTYPES)}, found {dtype!r}")
        # The affinity config is a partial: its metric's width comes from the backbone.
        if not isinstance(affinity, nn.Module):
            affinity = affinity(in_channels=in_channels)
        self.affinity = affinity
        if not isinstance(self.affinity, PixelAffinity):
            raise ValueError(
                f"affinity must build a PixelAffinity, found {type(self.affinity).__name__}"
            )
        if not isinstance(solver, SpectralSolver):
            raise ValueError(f"solver must be a SpectralSolver, found {type(solver).__name__}")
        if not isinstance(response, SpectralResponse):
            raise ValueError(
                f"response must be a SpectralResponse, found {type(response).__name__}"
            )
        if not solver.provides_eigenpairs and response.needs_eigenpairs:
            raise ValueError(
                f"solver={solver.name} filters without eigenpairs, but "
                f"response={type(response).__name__} is defined by eigenpair rank; use "
                "response=temper/heat/learned, or solver=lanczos/dense/nystrom"
            )
        if not solver.provides_eigenpairs and noise_gate:
            raise ValueError(
                f"head.noise_gate needs eigenpairs, but solver={solver.name} computes none; "
                "use solver=lanczos/dense/nystrom or head.noise_gate=false"
            )
        if solver.laplacians is not None and laplacian not in solver.laplacians:
            raise ValueError(
                f"solver={solver.name} works with laplacian in {solver.laplacians}, "
                f"found laplacian={laplacian}"
            )
        self.solver = solver
        self.response = response
        self.laplacian = laplacian
        self.k = k
        self.denoise = denoise
        self.noise_gate = noise_gate
        self.gate_sharpness = gate_sharpness
        self.spectral_dtype = DTYPES[dtype]
        self.value = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(in_channels + embed_dim, num_classes, kernel_size=1)

    # ------------------------------------------------------------------ pieces
    def _check_input(self, features: Tensor) -> None:
        self._check(features)
        num_nodes = features.shape[-1] * features.shape[-2]
        if self.solver.provides_eigenpairs and num_nodes <= self.k:
            raise ValueError(
                f"head=spectral with k={self.k} needs more than k feature-map pixels; the "
                f"feature map is {tuple(features.shape[-2:])} = {num_nodes} pixels "
                "(lower k or model.output_stride)"
            )
        if features.device.type == "mps" and self.spectral_dtype == torch.float64:
            raise ValueError(
                "head.dtype=float64 cannot run on MPS (Metal has no float64); use "
                "head.dtype=float32, or trainer.accelerator=cpu for float64 studies"
            )
        if not bool(torch.isfinite(features.detach()).all()):
            raise FloatingPointError(
                "non-finite features (NaN/Inf) reached head=spectral; the backbone diverged "
                "(lower optimizer.lr, or use trainer.gradient_clip_val)"
            )

    def filter_with_eigenpairs(
        self,
        eigenvalues: Tensor,
        eigenvectors: Tensor,
        value: Tensor,
        lambda_max: Tensor,
        gate: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """U diag(h) Uᵀ V with h = response(λ) (times ``gate``); returns (filtered, h).

        eigenvalues (B, k), eigenvectors (B, N, k), value (B, N, E) -> (B, N, E), (B, k).
        Invariant to eigenvector signs and to rotations inside repeated eigenvalues.
        """
        weights = self.response(eigenvalues, lambda_max)
        if gate is not None:
            weights = weights * gate
        return exact_spectral_filter(eigenvectors, eigenvalues, weights, value), weights

    def noise_mass(self, weights: Tensor, snr: Tensor, channels: int) -> Tensor:
        """Share of Σ h on directions with snr below the noise ceiling, (B,)."""
        ceiling = snr_threshold(weights.shape[-1], channels)
        at_floor = (snr.detach() <= ceiling).to(weights.dtype)
        total = weights.sum(dim=-1).clamp_min(torch.finfo(weights.dtype).tiny)
        return (weights * at_floor).sum(dim=-1) / total

    # ----------------------------------------------------------------- forward
    def forward(self, features: Tensor, size: tuple[int, int]) -> tuple[Tensor, dict]:
        self._check_input(features)
        batch, channels, height, width = features.shape
        device_type = features.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            x = features.to(self.spectral_dtype)
            nodes = x.flatten(2).transpose(1, 2)  # (B, N, C)
            floor = None
            if self.denoise or self.noise_gate:
                floor = noise_floor(nodes)
            if self.denoise:
                nodes, _ = denoise_features(nodes, floor)
                x = nodes.transpose(1, 2).reshape(batch, channels, height, width)
            graph = self.affinity(x)
            # Autocast is off here: the projection takes its own (float32) weights' dtype,
            # whatever precision the backbone's features come in (bf16/fp16 under AMP).
            value = self.value(features.to(self.value.weight.dtype))
            value = value.to(self.spectral_dtype).flatten(2).transpose(1, 2)
            lambda_max = lambda_max_bound(graph, self.laplacian).to(self.spectral_dtype)
            aux: dict = {"graph": graph, "laplacian": self.laplacian}
            if self.solver.provides_eigenpairs:
                sigma = self.affinity.sigma.to(self.spectral_dtype)
                values, vectors = self.solver.eigenpairs(
                    graph,
                    self.k,
                    self.laplacian,
                    self.affinity.map_features(nodes),
                    sigma if self.affinity.uses_sigma else None,
                )
                floor = floor if floor is not None else noise_floor(nodes.detach())
                snr = projected_snr(vectors, nodes, floor.sigma2)
                gate = None
                if self.noise_gate:
                    ceiling = snr_threshold(self.k, channels)
                    gate = torch.sigmoid(self.gate_sharpness * (snr - ceiling))
                filtered, weights = self.filter_with_eigenpairs(
                    values, vectors, value, lambda_max, gate
                )
                aux["eigenvalues"] = values
                aux["eigenvectors"] = vectors.transpose(1, 2).reshape(batch, -1, height, width)
                aux["response"] = weights
                aux["noise_energy"] = self.noise_mass(weights, snr, channels)
            else:

                def response(eigenvalues: Tensor) -> Tensor:
                    return self.response(eigenvalues, lambda_max)

                filtered = self.solver.apply(graph, value, response, self.laplacian, lambda_max)
        filtered = filtered.to(features.dtype).transpose(1, 2).reshape(batch, -1, height, width)
        embedding = torch.cat([features, filtered], dim=1)
        feature_logits = self.classifier(self.dropout(embedding))
        aux["embedding"] = filtered
        aux["feature_logits"] = feature_logits
        return upsample_logits(feature_logits, size), aux
