"""Nyström normalised-cut embeddings (Fowlkes et al., 2004).

The full affinity W_ij = κ(x_i, x_j) over all N nodes (dense, self-affinity κ(x, x) = 1
included) is never formed. With m landmarks (m << N), let C = κ(X, X_landmarks) be the
N x m affinity between every node and the landmarks and W_mm = κ(X_landmarks, X_landmarks)
(the landmark rows of C). Nyström approximates

    W ≈ Ŵ = C W_mm⁻¹ Cᵀ,

and this module computes the leading eigenpairs of the normalised affinity of Ŵ in one
shot, as in Fowlkes, Belongie, Chung & Malik (2004), sections 4-5:

1. Approximate degrees d = Ŵ 1 = C (W_mm⁻¹ (Cᵀ 1)) without forming Ŵ.
2. Normalise: Ŵ_n = D^-1/2 Ŵ D^-1/2 = G Gᵀ with G = D^-1/2 C Lc⁻ᵀ (N x m), where
   Lc Lcᵀ = W_mm + δ I is a Cholesky factorisation (δ: a small jitter, below).
3. Eigen-decompose the m x m matrix R = Gᵀ G = U diag(μ) Uᵀ (the differentiable dense
   ``cheeger.ops.eigh``; keep the k largest μ).
4. Extend: V = G U diag(μ)^-1/2 (N x k). Then Ŵ_n V = V diag(μ) and Vᵀ V = I exactly:
   the columns are orthonormal eigenvectors of the rank-m matrix Ŵ_n, and
   1 - μ are eigenvalues of its normalised Laplacian I - Ŵ_n.

Why this one-shot variant and not "eigen-decompose the landmarks' own normalised affinity
and extend through C": the simpler scheme normalises W_mm by the landmark-only degrees
(sums over m landmarks instead of N nodes, biased wherever landmarks are not spread like
the data) and returns extended vectors that are not orthogonal and are eigenvectors of no
matrix; the one-shot scheme estimates the full degrees, returns an orthonormal basis, and
is exact when the landmarks are all the nodes (m = N gives Ŵ = W up to the jitter δ).
Its cost is O(N m C) for the kernel, O(N m²) for the solve and R, O(m³) for the eigh;
memory O(N m).

Details.

* Jitter: δ = ``jitter`` x mean(diag W_mm) (= ``jitter`` for kernels with κ(x, x) = 1),
  default 10 m ε_dtype, about the rounding noise of an m x m kernel matrix; it keeps
  the Cholesky factorisation defined when landmarks (nearly) coincide and perturbs Ŵ by
  at most δ. If the factorisation still fails, δ is raised tenfold (up to 6 times).
* Degrees: a Nyström degree estimate can be too small (even negative) for a point that
  the landmarks represent poorly. Since κ >= 0, the true degree (a sum over all N
  training nodes) is at least the sum over the landmarks alone, c(x) · 1, and estimates
  are raised to that bound.
* Kernels: "gaussian" exp(-|x - y|² / (2 σ²)) and "cosine" (1 + cos(x, y)) / 2, both
  positive semi-definite with κ(x, x) = 1. The clamped cosine max(cos, 0) of
  ``cheeger.ops.affinity`` is not PSD, so W_mm⁻¹ would not define an approximation.
* Gradients: everything (kernel, Cholesky, triangular solves, eigh) is differentiable by
  autograd in ``features`` and ``sigma``; the landmark choice is not (integer data).
  The eigenvector gradient uses the bounded modes of ``cheeger.ops.eigh`` (``backward``).
* Signs: each returned eigenvector is flipped so that its largest-magnitude entry is
  positive (the convention of ``cheeger.ops.eigh``).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from cheeger.ops.affinity import check_features, check_scale, normalize_features
from cheeger.ops.checks import check_int
from cheeger.ops.eigh import canonicalize_eigenvector_signs, eigh

NystromKernel = Literal["gaussian", "cosine"]
NYSTROM_KERNELS = ("gaussian", "cosine")
LandmarkMethod = Literal["fps", "random"]
LANDMARK_METHODS = ("fps", "random")

_MAX_JITTER_RETRIES = 6


class NystromFit(NamedTuple):
    """The result of a Nyström fit; every tensor keeps its autograd history.

    Attributes:
        eigenvalues: (B, k) ascending, 1 - μ, eigenvalues of I - D^-1/2 Ŵ D^-1/2.
        eigenvectors: (B, N, k) orthonormal columns.
        landmark_index: int64 (B, m), the landmark nodes.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    landmark_index: Tensor


# --------------------------------------------------------------------------- landmarks


def farthest_point_sampling(
    features: Tensor, num_samples: int, *, seed: int = 0, start: Tensor | None = None
) -> Tensor:
    """Greedy farthest-point sampling in Euclidean feature space, per batch element.

    The first point is ``start`` (B,) or drawn uniformly with ``torch.Generator`` seeded
    by ``seed``; each next point maximises the squared distance to the nearest point
    chosen so far (ties: the lowest node id). A point already chosen is never chosen
    again, so ``num_samples = N`` returns a permutation even with duplicate points.

    Args:
        features: (B, N, C), finite.
        num_samples: m, 1 <= m <= N.

    Returns:
        int64 (B, m), in the order chosen. Costs O(B N C) per sample (one matrix-vector
        product), no gradient.
    """
    check_features(features)
    batch, num_nodes, _ = features.shape
    check_int("num_samples", num_samples, 1, num_nodes, "N")
    device = features.device
    if start is None:
        generator = torch.Generator().manual_seed(int(seed))
        start = torch.randint(num_nodes, (batch,), generator=generator)
    elif not isinstance(start, Tensor) or start.shape != (batch,):
        found = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
        raise ValueError(f"start must be an int64 tensor of shape (B,) = ({batch},), found {found}")
    start = start.to(device=device, dtype=torch.int64)
    if bool(((start < 0) | (start >= num_nodes)).any()):
        raise ValueError(f"start entries must lie in [0, N) = [0, {num_nodes})")
    with torch.no_grad():
        # Centred: distances are translation invariant and smaller norms cancel less.
        points = features.detach()
        points = points - points.mean(dim=1, keepdim=True)
        norms = (points * points).sum(dim=-1)  # (B, N)
        rows = torch.arange(batch, device=device)
        chosen = torch.empty(batch, num_samples, dtype=torch.int64, device=device)
        nearest = torch.full_like(norms, float("inf"))
        current = start
        for step in range(num_samples):
            chosen[:, step] = current
            centre = points[rows, current]  # (B, C)
            inner = (points @ centre.unsqueeze(-1)).squeeze(-1)
            squared = (norms + norms[rows, current].unsqueeze(-1) - 2.0 * inner).clamp_min(0.0)
            nearest = torch.minimum(nearest, squared)
            nearest[rows, current] = -1.0  # chosen: below every distance, never again
            current = nearest.argmax(dim=-1)
    return chosen


def sample_landmarks(
    features: Tensor, num_landmarks: int, method: LandmarkMethod = "fps", *, seed: int = 0
) -> Tensor:
    """m landmark ids per batch element, int64 (B, m): "fps" (farthest points, spread over
    the feature space, first point random) or "random" (uniform without replacement);
    both reproducible from ``seed``."""
    check_features(features)
    batch, num_nodes, _ = features.shape
    check_int("num_landmarks", num_landmarks, 1, num_nodes, "N")
    if method == "fps":
        return farthest_point_sampling(features, num_landmarks, seed=seed)
    if method == "random":
        generator = torch.Generator().manual_seed(int(seed))
        picks = [
            torch.randperm(num_nodes, generator=generator)[:num_landmarks] for _ in range(batch)
        ]
        return torch.stack(picks).to(features.device)
    raise ValueError(f"method must be one of {LANDMARK_METHODS}, found {method!r}")


# --------------------------------------------------------------------------- kernel


def kernel_matrix(
    x: Tensor,
    y: Tensor,
    kernel: NystromKernel = "gaussian",
    sigma: Tensor | float | None = None,
) -> Tensor:
    """Dense kernel block κ(x_i, y_j), (B, n, m), for x (B, n, C) and y (B, m, C).

    "gaussian": exp(-|x_i - y_j|² / (2 σ²)), σ > 0 a scalar or (B,); the squared distance
    is |x|² + |y|² - 2 <x, y> on features shifted by the (detached) mean of y, clamped at 0
    (one matrix product, no (n, m, C) block). "cosine": (1 + cos(x_i, y_j)) / 2.
    Differentiable in x, y and sigma. Memory O(B n m).
    """
    if kernel == "cosine":
        return 0.5 * (1.0 + (normalize_features(x) @ normalize_features(y).transpose(-1, -2)))
    if kernel != "gaussian":
        raise ValueError(f"kernel must be one of {NYSTROM_KERNELS}, found {kernel!r}")
    if sigma is None:
        raise ValueError("sigma must be given for the 'gaussian' kernel, found None")
    sigma = check_scale(sigma, "sigma", x.shape[0]).to(dtype=x.dtype, device=x.device)
    shift = y.detach().mean(dim=1, keepdim=True)
    x, y = x - shift, y - shift
    squared = (x * x).sum(-1).unsqueeze(-1) + (y * y).sum(-1).unsqueeze(-2)
    squared = torch.baddbmm(squared, x, y.transpose(-1, -2), alpha=-2.0).clamp_min(0.0)
    scale = sigma.reshape(-1, 1, 1)
    return torch.exp(-squared / (2.0 * scale * scale))


# --------------------------------------------------------------------------- fit


def _cholesky_with_jitter(matrix: Tensor, jitter: float) -> Tensor:
    """Lower Cholesky factor of matrix + δ I, δ = jitter x mean diagonal, raised on failure."""
    size = matrix.shape[-1]
    eye = torch.eye(size, dtype=matrix.dtype, device=matrix.device)
    scale = matrix.detach().diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
    for _ in range(_MAX_JITTER_RETRIES + 1):
        shifted = matrix + (jitter * scale).reshape(-1, 1, 1) * eye
        factor, info = torch.linalg.cholesky_ex(shifted)
        if not bool((info > 0).any()):
            return factor
        jitter *= 10.0
    raise ValueError(
        "the landmark kernel matrix is not positive definite even with jitter "
        f"{jitter / 10.0:.3g} x its mean diagonal; check features and sigma"
    )


def _bounded_degrees(cross: Tensor, estimate: Tensor) -> Tensor:
    """max(estimate, c(x) · 1, tiny): the landmark row sum bounds every true degree below."""
    floor = cross.sum(-1, keepdim=True).clamp_min(float(torch.finfo(cross.dtype).tiny))
    return torch.maximum(estimate, floor)


def nystrom_fit(
    features: Tensor,
    num_landmarks: int,
    k: int,
    *,
    kernel: NystromKernel = "gaussian",
    sigma: Tensor | float | None = None,
    landmarks: LandmarkMethod | Tensor = "fps",
    seed: int = 0,
    jitter: float | None = None,
    backward: str = "lorentzian",
    eps: float = 1e-4,
) -> NystromFit:
    """The k smallest eigenpairs of the normalised Laplacian of the Nyström affinity.

    Args:
        features: (B, N, C), finite, float32 or float64.
        num_landmarks: m, 1 <= m <= N.
        k: eigenpairs, 1 <= k <= m.
        kernel: "gaussian" (needs ``sigma``) or "cosine" (module docstring).
        sigma: Gaussian bandwidth, positive scalar or (B,) tensor; may require grad.
        landmarks: "fps", "random" (see :func:`sample_landmarks`, seeded by ``seed``) or
            int64 ids (B, m) chosen by the caller (distinct ids per row).
        jitter: relative Cholesky jitter δ (module docstring); None: 10 m ε_dtype.
        backward, eps: eigenvector gradient mode and scale of ``cheeger.ops.eigh``.

    Returns:
        :class:`NystromFit`; ``eigenvalues`` (B, k) ascending and ``eigenvectors``
        (B, N, k) orthonormal, approximating those of I - D^-1/2 W D^-1/2 for the full
        dense W = κ(X, X) (exactly, up to the jitter, when m = N). The smallest value is
        near 0 but not pinned to it: Ŵ may have small negative entries, and raised
        degrees (module docstring) shift the spectrum.
    """
    check_features(features)
    if features.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"features must be float32 or float64, found {features.dtype}")
    batch, num_nodes, _ = features.shape
    check_int("num_landmarks", num_landmarks, 1, num_nodes, "N")
    check_int("k", k, 1, num_landmarks, "num_landmarks")
    if kernel not in NYSTROM_KERNELS:
        raise ValueError(f"kernel must be one of {NYSTROM_KERNELS}, found {kernel!r}")
    if kernel == "gaussian":
        if sigma is None:
            raise ValueError("sigma must be given for the 'gaussian' kernel, found None")
        sigma = check_scale(sigma, "sigma", batch)
    else:
        sigma = None
    if jitter is None:
        jitter = 10.0 * num_landmarks * float(torch.finfo(features.dtype).eps)
    if not (isinstance(jitter, (int, float)) and math.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, found {jitter!r}")
    index = _landmark_index(features, num_landmarks, landmarks, seed)

    landmark_features = features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
    cross = kernel_matrix(features, landmark_features, kernel, sigma)  # C: (B, N, m)
    among = cross.gather(1, index.unsqueeze(-1).expand(-1, -1, num_landmarks))  # W_mm
    among = 0.5 * (among + among.transpose(-1, -2))
    factor = _cholesky_with_jitter(among, float(jitter))  # Lc: (B, m, m)
    # H = Lc⁻¹ Cᵀ (B, m, N), so that Ŵ = C (W_mm + δ I)⁻¹ Cᵀ = Hᵀ H.
    whitened = torch.linalg.solve_triangular(factor, cross.transpose(-1, -2), upper=False)
    column_sums = whitened.sum(-1, keepdim=True)  # Lc⁻¹ Cᵀ 1: (B, m, 1)
    degrees = _bounded_degrees(cross, whitened.transpose(-1, -2) @ column_sums)  # (B, N, 1)
    normalised = whitened.transpose(-1, -2) * torch.rsqrt(degrees)  # G: (B, N, m)
    gram = normalised.transpose(-1, -2) @ normalised  # R = Gᵀ G: (B, m, m)
    gram = 0.5 * (gram + gram.transpose(-1, -2))
    mu, rotation = eigh(gram, k=k, largest=True, backward=backward, eps=eps, sign=None)
    inverse_root = torch.rsqrt(mu.clamp_min(float(torch.finfo(mu.dtype).tiny))).unsqueeze(-2)
    eigenvectors = (normalised @ rotation) * inverse_root  # V = G U μ^-1/2
    eigenvectors = eigenvectors * _sign_flips(eigenvectors)
    return NystromFit(eigenvalues=1.0 - mu, eigenvectors=eigenvectors, landmark_index=index)


def _landmark_index(
    features: Tensor, num_landmarks: int, landmarks: LandmarkMethod | Tensor, seed: int
) -> Tensor:
    batch, num_nodes, _ = features.shape
    if not isinstance(landmarks, Tensor):
        if landmarks not in LANDMARK_METHODS:
            raise ValueError(
                f"landmarks must be one of {LANDMARK_METHODS} or an int64 (B, m) tensor, "
                f"found {landmarks!r}"
            )
        return sample_landmarks(features, num_landmarks, landmarks, seed=seed)
    if landmarks.dtype != torch.int64 or landmarks.shape != (batch, num_landmarks):
        raise ValueError(
            f"landmarks must be int64 (B, m) = ({batch}, {num_landmarks}), "
            f"found {landmarks.dtype} {tuple(landmarks.shape)}"
        )
    if bool(((landmarks < 0) | (landmarks >= num_nodes)).any()):
        raise ValueError(f"landmarks entries must lie in [0, N) = [0, {num_nodes})")
    if bool((landmarks.sort(dim=-1).values.diff(dim=-1) == 0).any()):
        raise ValueError("landmarks must hold distinct ids per batch element, found repeats")
    return landmarks.to(features.device)


def _sign_flips(vectors: Tensor) -> Tensor:
    """±1 (B, 1, k) making each column's largest-magnitude entry positive (detached)."""
    detached = vectors.detach()
    canonical = canonicalize_eigenvector_signs(detached)
    flips = torch.where((canonical * detached).sum(-2, keepdim=True) < 0, -1.0, 1.0)
    return flips.to(vectors.dtype)


# --------------------------------------------------------------------------- evaluation


def subspace_distance(basis: Tensor, other: Tensor) -> Tensor:
    """sin of the largest principal angle between span(basis) and span(other), (B,).

    Both (B, N, k) with orthonormal columns; equals |P - P'|₂ for the orthogonal
    projectors. Computed as the largest singular value of other - basis (basisᵀ other),
    without the cancellation of sqrt(1 - cos²).
    """
    if basis.shape != other.shape or basis.dim() != 3:
        raise ValueError(
            f"basis and other must be (B, N, k) of one shape, found {tuple(basis.shape)} "
            f"and {tuple(other.shape)}"
        )
    residual = other - basis @ (basis.transpose(-1, -2) @ other)
    return torch.linalg.matrix_norm(residual, ord=2)
