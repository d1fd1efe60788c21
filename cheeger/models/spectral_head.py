"""SpectralHead: classify pixels through the spectrum of a learned pixel graph.

The head builds a graph over pixels (``affinity`` group: window or kNN, learned
bandwidth and metric, guided by the features, the image or both), takes its Laplacian
(``laplacian``) and applies a spectral filter h(L) (``response`` h, ``solver``: dense,
lanczos or nystrom eigenpairs, or a Chebyshev polynomial) to a signal. ``mode`` says
which signal, at which resolution:

* ``embedding`` (the first design): the graph lives on the feature map (h, w); the
  signal is a learned projection V = P X of the features (``embed_dim`` channels) and
  the classifier reads [X, h(L) V], then logits are upsampled to the input.
* ``logits``: a residual spectral refinement of the class scores at input resolution,
  z' = z + α (h̃(L) g(z) - g(z)), with z the upsampled 1x1-conv logits, g softmax or
  identity (``refine_input``), h̃ = h / h(0) and α learned (``alpha``). On the graph's
  null space h̃ is 1, so a score that is constant on every connected region is left as
  it is: only what the graph says differs between neighbours changes. α = 0 is the conv
  head. With an image guide this is a learned, differentiable bilateral filter / CRF
  step on the scores.
* ``upsample``: the backbone's coarse projection P X is upsampled to the input and
  filtered on the fine graph (guided joint upsampling); logits are z + C h(L) up(P X),
  C a 1x1 convolution that starts at 0 (so training starts from the conv head).

For ``laplacian=random_walk`` every solver computes h(L_rw) X = D^-1/2 U h(Λ) Uᵀ D^1/2 X
(``cheeger.models.solvers``); its null space holds the constants of each component.

Sign and basis invariance. Eigenpair solvers filter through U diag(h) Uᵀ, which is
unchanged when a column flips sign and when columns of a repeated eigenvalue rotate
among themselves (h is a function of λ). No raw eigenvector reaches the classifier.

Auxiliaries (:class:`cheeger.models.auxiliaries.Auxiliaries`): ``graph``, ``laplacian``,
``graph_size`` (h, w) of the graph, ``feature_logits`` (B, K, h, w) (the logits at the
graph's nodes, for the Rayleigh term), ``embedding`` (the filtered signal),
``spectral_info`` (``SpectralInfo``: solver iterations, residual), and for eigenpair
solvers ``eigenvalues`` (B, k), ``eigenvectors`` (B, k, h, w), ``response`` (B, k) and
``noise_energy`` (B,), the share of the response's mass on eigen-directions whose
feature energy is at the noise floor, computed only when read (or for the gate).

The spectral part runs in ``dtype`` (float32 default, float64 for studies), outside any
autocast region: under ``trainer.precision=bf16-mixed``/``16-mixed`` half-precision
inputs are cast up and only the 1x1 convolutions run under autocast. float64 is refused
on MPS, which has no float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cheeger.models.affinity import PixelAffinity
from cheeger.models.auxiliaries import Auxiliaries
from cheeger.models.heads import SegmentationHead, dropout_layer, output_size, upsample_logits
from cheeger.models.response import SpectralResponse
from cheeger.models.solvers import SpectralSolver
from cheeger.ops.laplacian import LAPLACIAN_KINDS
from cheeger.ops.random_matrix import (
    denoise_features,
    noise_floor,
    projected_snr,
    snr_threshold,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODES = ("embedding", "logits", "upsample")
REFINE_INPUTS = ("logits", "softmax")


class SpectralHead(SegmentationHead):
    """Spectral segmentation head (module docstring).

    Args:
        in_channels: C of the backbone features (filled in by the code).
        num_classes: K (filled in by the code).
        affinity: a partial ``PixelAffinity`` taking ``in_channels`` and
            ``image_channels`` (``affinity`` group).
        solver: a ``SpectralSolver`` (``solver`` group).
        response: a ``SpectralResponse`` module (``response`` group).
        laplacian: "unnormalized", "symmetric" or "random_walk".
        mode: "embedding", "logits" or "upsample" (module docstring).
        embed_dim: E, channels of the filtered projection (embedding, upsample).
        alpha: initial refinement weight α (logits).
        learn_alpha: make α a parameter (else fixed).
        refine_input: g of the logits mode, "logits" (identity) or "softmax".
        denoise: MP-denoise the features before the affinity (embedding).
        noise_gate: multiply h by a gate that closes on noise-floor directions
            (embedding with an eigenpair solver).
        gate_sharpness: slope of that gate in SNR units.
        dropout: dropout on the classifier input.
        dtype: "float32" or "float64" for the spectral computation.
        image_channels: channels of the input image (filled in by the code).

    Shapes:
        forward(features (B, C, h, w), image (B, 3, H, W) or None) -> logits
        (B, K, H, W) (at (h, w) without an image), aux
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        affinity,
        solver: SpectralSolver,
        response: SpectralResponse,
        laplacian: str = "symmetric",
        mode: str = "embedding",
        embed_dim: int = 16,
        alpha: float = 0.5,
        learn_alpha: bool = True,
        refine_input: str = "logits",
        denoise: bool = False,
        noise_gate: bool = False,
        gate_sharpness: float = 4.0,
        dropout: float = 0.0,
        dtype: str = "float32",
        image_channels: int = 3,
    ) -> None:
        super().__init__(in_channels, num_classes)
        if laplacian not in LAPLACIAN_KINDS:
            raise ValueError(f"laplacian must be one of {LAPLACIAN_KINDS}, found {laplacian!r}")
        if mode not in MODES:
            raise ValueError(f"head.mode must be one of {MODES}, found {mode!r}")
        if refine_input not in REFINE_INPUTS:
            raise ValueError(
                f"head.refine_input must be one of {REFINE_INPUTS}, found {refine_input!r}"
            )
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"head.embed_dim must be an int >= 1, found {embed_dim!r}")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
            raise ValueError(f"head.alpha must be a finite number, found {alpha!r}")
        if dtype not in DTYPES:
            raise ValueError(f"head.dtype must be one of {tuple(DTYPES)}, found {dtype!r}")
        # The affinity config is a partial: its metric's width comes from the backbone.
        if not isinstance(affinity, nn.Module):
            affinity = affinity(in_channels=in_channels, image_channels=image_channels)
        if not isinstance(affinity, PixelAffinity):
            raise ValueError(
                f"affinity must build a PixelAffinity, found {type(affinity).__name__}"
            )
        if not isinstance(solver, SpectralSolver):
            raise ValueError(f"solver must be a SpectralSolver, found {type(solver).__name__}")
        if not isinstance(response, SpectralResponse):
            raise ValueError(
                f"response must be a SpectralResponse, found {type(response).__name__}"
            )
        self._check_combination(mode, solver, response, laplacian, denoise, noise_gate)
        self.affinity = affinity
        self.solver = solver
        self.response = response
        self.laplacian = laplacian
        self.mode = mode
        self.refine_input = refine_input
        self.denoise = denoise
        self.noise_gate = noise_gate
        self.gate_sharpness = gate_sharpness
        self.image_channels = image_channels
        self.spectral_dtype = DTYPES[dtype]
        self.dropout = dropout_layer(dropout)
        if mode == "embedding":
            self.value = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
            self.classifier = nn.Conv2d(in_channels + embed_dim, num_classes, kernel_size=1)
            return
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        if mode == "logits":
            initial = torch.tensor(float(alpha))
            if learn_alpha:
                self.alpha = nn.Parameter(initial)
            else:
                self.register_buffer("alpha", initial)
            return
        self.value = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.refine = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)

    @staticmethod
    def _check_combination(mode, solver, response, laplacian, denoise, noise_gate) -> None:
        """Refuse option pairs that cannot work, naming both options."""
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
        if mode != "embedding" and solver.name == "dense":
            raise ValueError(
                f"solver=dense forms an N x N Laplacian over the input's pixels for "
                f"head.mode={mode} (N = H W); use solver=chebyshev or solver=lanczos"
            )
        if mode != "embedding" and (denoise or noise_gate):
            option = "head.denoise" if denoise else "head.noise_gate"
            raise ValueError(
                f"{option} concerns the feature graph of head.mode=embedding, found "
                f"head.mode={mode}; set {option}=false"
            )

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, features: Tensor, image: Tensor | None) -> None:
        self._check(features)
        if image is not None:
            fits = (
                image.dim() == 4
                and image.shape[0] == features.shape[0]
                and image.shape[-2] % features.shape[-2] == 0
                and image.shape[-1] % features.shape[-1] == 0
            )
            if not fits:
                raise ValueError(
                    "head=spectral needs image (B, channels, H, W) with the features' B and "
                    "H, W multiples of their h, w; found image "
                    f"{tuple(image.shape)} and features {tuple(features.shape)}"
                )
            if self.affinity.uses_image and image.shape[1] != self.image_channels:
                raise ValueError(
                    f"affinity.guide={self.affinity.guide} expects {self.image_channels} image "
                    f"channels (model.in_channels), found {image.shape[1]}"
                )
        if self.mode != "embedding" and image is None:
            raise ValueError(
                f"head.mode={self.mode} refines at the input's resolution and needs the "
                "image: call head(features, image)"
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

    def check_sizes(self, feature_size: tuple[int, int], image_size: tuple[int, int]) -> None:
        """The solver's refusals (k, dense max_nodes) for the graph these sizes give."""
        height, width = feature_size if self.mode == "embedding" else image_size
        self.solver.check_num_nodes(height * width)

    def graph_size(self, features: Tensor, image: Tensor | None) -> tuple[int, int]:
        """(h, w) of the graph: the feature map (embedding) or the input (other modes)."""
        if self.mode == "embedding":
            return tuple(features.shape[-2:])
        return tuple(image.shape[-2:])

    def noise_mass(self, weights: Tensor, snr: Tensor, channels: int) -> Tensor:
        """Share of Σ h on directions with snr below the noise ceiling, (B,)."""
        ceiling = snr_threshold(weights.shape[-1], channels)
        at_floor = (snr.detach() <= ceiling).to(weights.dtype)
        total = weights.sum(dim=-1).clamp_min(torch.finfo(weights.dtype).tiny)
        return (weights * at_floor).sum(dim=-1) / total

    # ----------------------------------------------------------------- forward
    def forward(self, features: Tensor, image: Tensor | None = None) -> tuple[Tensor, Auxiliaries]:
        self._check_inputs(features, image)
        size = output_size(features, image)
        if self.mode == "embedding":
            return self._embedding(features, image, size)
        return self._refine(features, image, size)

    def _response(self, normalise: bool):
        """The response as ``(λ, λmax) -> h``; normalised to h(0) = 1 when asked."""
        if not normalise:
            return self.response

        def normalised(eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
            at_zero = self.response(eigenvalues.new_zeros(eigenvalues.shape[0], 1), lambda_max)
            return self.response(eigenvalues, lambda_max) / at_zero

        return normalised

    def _embedding(self, features, image, size):
        batch, channels, height, width = features.shape
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.to(self.spectral_dtype)
            nodes = x.flatten(2).transpose(1, 2)  # (B, N, C)
            floor = noise_floor(nodes) if self.denoise or self.noise_gate else None
            if self.denoise:
                nodes, _ = denoise_features(nodes, floor)
                x = nodes.transpose(1, 2).reshape(batch, channels, height, width)
            guide_image = None if image is None else image.to(self.spectral_dtype)
            graph = self.affinity(self.affinity.guide_map(x, guide_image, (height, width)))
            # Autocast is off here: the projection takes its own (float32) weights' dtype,
            # whatever precision the backbone's features come in (bf16/fp16 under AMP).
            value = self.value(features.to(self.value.weight.dtype))
            value = value.to(self.spectral_dtype).flatten(2).transpose(1, 2)
            snr_cache: dict[str, Tensor] = {}

            def snr(vectors: Tensor) -> Tensor:
                if "snr" not in snr_cache:
                    sigma2 = (floor if floor is not None else noise_floor(nodes.detach())).sigma2
                    snr_cache["snr"] = projected_snr(vectors, nodes, sigma2)
                return snr_cache["snr"]

            gate = None
            if self.noise_gate:

                def gate(eigenvalues: Tensor, vectors: Tensor) -> Tensor:
                    ceiling = snr_threshold(vectors.shape[-1], channels)
                    return torch.sigmoid(self.gate_sharpness * (snr(vectors) - ceiling))

            filtered, info = self.solver.filter(
                graph, value, self._response(False), self.laplacian, gate
            )
        filtered = filtered.to(features.dtype).transpose(1, 2).reshape(batch, -1, height, width)
        feature_logits = self.classifier(self.dropout(torch.cat([features, filtered], dim=1)))
        aux = self._auxiliaries(graph, (height, width), info, feature_logits, filtered)
        if info.eigenvectors is not None:
            aux.lazy(
                "noise_energy",
                lambda: self.noise_mass(info.response, snr(info.eigenvectors), channels),
            )
        return upsample_logits(feature_logits, size), aux

    def _refine(self, features, image, size):
        batch = features.shape[0]
        height, width = size
        logits = upsample_logits(self.classifier(self.dropout(features)), size)
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.to(self.spectral_dtype)
            guide = self.affinity.guide_map(x, image.to(self.spectral_dtype), size)
            graph = self.affinity(guide)
            if self.mode == "logits":
                scores = logits.to(self.spectral_dtype)
                signal = scores.softmax(dim=1) if self.refine_input == "softmax" else scores
            else:
                value = self.value(features.to(self.value.weight.dtype)).to(self.spectral_dtype)
                signal = upsample_logits(value, size)
            nodes = signal.flatten(2).transpose(1, 2)  # (B, N, S)
            filtered, info = self.solver.filter(
                graph, nodes, self._response(self.mode == "logits"), self.laplacian
            )
            if self.mode == "logits":
                filtered = filtered - nodes
            filtered = filtered.transpose(1, 2).reshape(batch, -1, height, width)
        if self.mode == "logits":
            refined = logits + self.alpha.to(filtered.dtype) * filtered
        else:
            refined = logits + self.refine(filtered.to(self.refine.weight.dtype))
        aux = self._auxiliaries(graph, size, info, refined, filtered)
        return refined, aux

    def _auxiliaries(self, graph, size, info, feature_logits, filtered) -> Auxiliaries:
        batch = feature_logits.shape[0]
        aux = Auxiliaries(
            {
                "graph": graph,
                "laplacian": self.laplacian,
                "graph_size": tuple(size),
                "feature_logits": feature_logits,
                "embedding": filtered,
                "spectral_info": info,
            }
        )
        if info.eigenvectors is not None:
            aux["eigenvalues"] = info.eigenvalues
            aux["eigenvectors"] = info.eigenvectors.transpose(1, 2).reshape(batch, -1, *size)
            aux["response"] = info.response
        return aux
