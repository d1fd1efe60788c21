"""Marchenko-Pastur noise floor of a feature covariance.

Random-matrix theory speaks about the spectrum of a *sample covariance*, not about graph
Laplacians. For N samples of C-dimensional noise with independent entries of variance
σ², the eigenvalues of S = Xᵀ X / N (X centred, N x C) fill, as N, C grow with
γ = C / N fixed (γ <= 1), the Marchenko-Pastur law on

    [σ² (1 - √γ)², σ² (1 + √γ)²],

so an eigenvalue above the bulk edge σ² (1 + √γ)² carries signal. A planted rank-r
component whose population variance exceeds σ² (1 + √γ) (the BBP detectability
threshold) separates from the bulk; weaker ones do not. For γ > 1 the C - N extra
eigenvalues are exactly 0 and the nonzero ones follow the law of the N x N problem
rescaled by γ, which has the same bulk edge formula; this module handles both cases
through the nonzero eigenvalues.

σ² is unknown. It is estimated robustly by matching medians: the median sample
eigenvalue of the bulk equals σ² m(γ), m(γ) the median of the unit-variance MP law
(computed by quadrature and cached), so σ̂² = median(eigenvalues) / m(γ). A few spikes
move the median by a few ranks only, whereas the mean (the trace estimate) absorbs
their whole energy.

Used by the spectral head to (a) denoise features before the affinity (keep the
components above the edge) and (b) tell noise-floor eigen-directions of the graph from
signal ones (``projected_snr``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from cheeger.ops.eigh import eigh


class NoiseFloor(NamedTuple):
    """Per-image result of :func:`noise_floor`.

    Attributes:
        sigma2: (B,) estimated noise variance σ̂².
        edge: (B,) bulk edge σ̂² (1 + √γ)².
        eigenvalues: (B, C) covariance eigenvalues, descending.
        eigenvectors: (B, C, C) matching eigenvectors (columns).
        rank: (B,) int64, number of eigenvalues above the edge.
    """

    sigma2: Tensor
    edge: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    rank: Tensor


def marchenko_pastur_edges(sigma2: Tensor | float, ratio: float) -> tuple[Tensor, Tensor]:
    """Lower and upper bulk edges σ² (1 ∓ √γ)² of the MP law with aspect ratio γ = C / N.

    For γ > 1 the edges of the nonzero eigenvalues are given (the formula is symmetric).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0 (gamma = C / N), found {ratio}")
    sigma2 = torch.as_tensor(sigma2)
    root = math.sqrt(ratio)
    return sigma2 * (1.0 - root) ** 2, sigma2 * (1.0 + root) ** 2


@functools.lru_cache(maxsize=256)
def marchenko_pastur_median(ratio: float) -> float:
    """Median of the nonzero eigenvalues' MP law with σ² = 1 and aspect ratio γ.

    For γ <= 1 the density is sqrt((b - x)(x - a)) / (2 π γ x) on [a, b]; for γ > 1 the
    nonzero eigenvalues of the C x C covariance follow γ times the law of ratio 1 / γ.
    Computed by quadrature on a Chebyshev-spaced grid (relative accuracy better than 1e-7).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0 (gamma = C / N), found {ratio}")
    if ratio > 1:
        return ratio * marchenko_pastur_median(1.0 / ratio)
    low, high = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    # Substituting x = a + (b - a) (1 - cos t) / 2 removes the square-root end points
    # (and, for γ = 1, the 1 / sqrt(x) pole at a = 0); the midpoint rule never
    # evaluates the end points themselves.
    steps = 40000
    edges = np.linspace(0.0, math.pi, steps + 1)
    t = 0.5 * (edges[1:] + edges[:-1])
    x = low + (high - low) * (1 - np.cos(t)) / 2
    dx = (high - low) * np.sin(t) / 2
    density = np.sqrt(np.clip((high - x) * (x - low), 0, None)) / (2 * math.pi * ratio * x)
    cdf = np.concatenate([[0.0], np.cumsum(density * dx * (math.pi / steps))])
    cdf /= cdf[-1]
    x = low + (high - low) * (1 - np.cos(edges)) / 2
    return float(np.interp(0.5, cdf, x))


def noise_floor(features: Tensor, backward: str = "lorentzian") -> NoiseFloor:
    """Covariance spectrum, σ̂² and MP edge of each image's pixel features.

    Args:
        features: (B, N, C) samples (rows) of C channels; centred here per image.
        backward: gradient mode of the eigenvector backward (``cheeger.ops.eigh``), so
            that a repeated covariance eigenvalue gives a bounded gradient.

    Returns:
        :class:`NoiseFloor`. Only the min(N, C) nonzero eigenvalues enter the median.
    """
    if features.dim() != 3 or features.shape[1] < 2 or features.shape[2] < 1:
        raise ValueError(f"features must be (B, N, C) with N >= 2, found {tuple(features.shape)}")
    _, num_samples, channels = features.shape
    centred = features - features.mean(dim=1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred / num_samples
    covariance = 0.5 * (covariance + covariance.transpose(1, 2))
    values, vectors = eigh(covariance, largest=True, backward=backward, sign=None)
    ratio = channels / num_samples
    nonzero = min(channels, num_samples - 1)
    median = values[:, :nonzero].detach().median(dim=1).values
    sigma2 = median / marchenko_pastur_median(ratio)
    _, edge = marchenko_pastur_edges(sigma2, ratio)
    rank = (values.detach() > edge.unsqueeze(-1)).sum(dim=1)
    return NoiseFloor(sigma2, edge, values, vectors, rank)


def denoise_features(features: Tensor, floor: NoiseFloor | None = None) -> tuple[Tensor, Tensor]:
    """Project each image's features onto its covariance components above the MP edge.

    Args:
        features: (B, N, C).
        floor: a precomputed :func:`noise_floor` of ``features`` (computed when None).

    Returns:
        denoised (B, N, C) = mean + (X - mean) V_r V_rᵀ with V_r the components above
        the edge (an image whose spectrum is all bulk keeps only its mean), and the kept
        rank (B,). Differentiable in ``features`` (the rank is a discrete choice).
    """
    floor = noise_floor(features) if floor is None else floor
    mean = features.mean(dim=1, keepdim=True)
    keep = (floor.eigenvalues.detach() > floor.edge.unsqueeze(-1)).to(features.dtype)
    basis = floor.eigenvectors * keep.unsqueeze(1)  # zero the columns at or below the edge
    projected = (features - mean) @ basis @ basis.transpose(1, 2)
    return mean + projected, floor.rank


def projected_snr(vectors: Tensor, features: Tensor, sigma2: Tensor) -> Tensor:
    """Energy of the features along each unit node-vector, in units of the noise level.

    snr_j = ||u_jᵀ (X - mean)||² / (C σ²): for noise features with per-channel variance
    σ², any fixed unit vector u gives a χ²_C / C variable of mean 1, so directions with
    snr near 1 carry no more feature energy than noise would.

    Args:
        vectors: (B, N, k) orthonormal node vectors (eigenvectors of a graph Laplacian).
        features: (B, N, C).
        sigma2: (B,) noise variance (:func:`noise_floor`).

    Returns:
        (B, k).
    """
    centred = features - features.mean(dim=1, keepdim=True)
    energy = (vectors.transpose(1, 2) @ centred).pow(2).sum(dim=-1)  # (B, k)
    floor = sigma2.clamp_min(torch.finfo(sigma2.dtype).tiny) * features.shape[-1]
    return energy / floor.unsqueeze(-1)


def snr_threshold(num_vectors: int, channels: int) -> float:
    """Noise ceiling of :func:`projected_snr` for k vectors: (1 + √(k / C))².

    The k x C matrix Uᵀ X of noise has iid N(0, σ²) entries; its squared row norms over
    C σ² are bounded by its largest singular value squared over C σ², which
    concentrates at (1 + √(k / C))².
    """
    if num_vectors < 1 or channels < 1:
        raise ValueError(
            f"num_vectors and channels must be >= 1, found {num_vectors} and {channels}"
        )
    return (1.0 + math.sqrt(num_vectors / channels)) ** 2
