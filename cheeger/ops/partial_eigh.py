"""The k smallest eigenpairs of a sparse graph Laplacian, batched, with a complete backward.

:func:`partial_eigh` takes a :class:`~cheeger.ops.graph.NeighborGraph` (B graphs on N
nodes) and returns the k smallest eigenvalues (B, k) and orthonormal eigenvectors
(B, N, k) of L = D - W ("unnormalized") or L = I - D^-1/2 W D^-1/2 ("symmetric"); for
"random_walk" (I - D^-1 W, similar to L_sym) it solves the symmetric problem and returns
v = D^-1/2 u, so that L_rw v = λ v and Vᵀ D V = I (unit D-norm, not unit Euclidean
norm; a vector living on isolated nodes, whose D^-1/2 is 0 there, maps to 0). Pure
torch, matrix-free apart from one CSR copy of the edge values, device-agnostic.

Forward: Chebyshev-filtered subspace iteration (Zhou & Saad, 2007)
--------------------------------------------------------------------
A block of m = k + guard vectors (guard = max(4, 3k/4) by default: 12 for k = 16) is
repeatedly multiplied by a degree-d Chebyshev polynomial in L that damps the interval
[θ_m, λ_max] (θ_m the block's largest Ritz value) and amplifies what lies below it
(d <= 16, the degree predicted to reach the tolerance, which trims the last
iteration: 1,000 -> 664 products on a clustered kNN graph), then orthonormalised
(Cholesky-QR, Householder QR when that fails) and projected (Rayleigh-Ritz: the
eigenpairs of the m x m matrix Xᵀ L X). A pair has converged when
its relative residual ||L u - θ u|| / λ_bound <= tol, with λ_bound the a-priori bound of
``lambda_max_bound`` (2 for the normalised kinds, 2 max d for L = D - W); default tol
1e-4 in float32, 1e-8 in float64. Leading pairs converged in every batch element are
locked: they leave the filter and are deflated from it (L' = L + V diag(λ_max - θ) Vᵀ
moves them to the damped end; without this, float32 runs with d = 24 stagnated at a
residual of 1e-4 because the filter re-amplified their rounding error). The top of the
damped interval is a 20-step Lanczos estimate of λ_max rather than the bound (true λ_max
is 1.25-1.5 for L_sym of kNN and grid graphs, not 2), which shortens the interval and
speeds convergence by about sqrt(2/1.3).

The block is wider than k on purpose: a repeated eigenvalue (eigenvalue 0 with one copy
per connected component) is found with all its copies as long as they fit in the block,
whereas single-vector Krylov solvers miss copies; the guard vectors also set the
convergence rate (the gap that matters is λ_{m+1} - λ_k, not λ_{k+1} - λ_k) and
precondition the backward. ``X0`` (B, N, k) or wider warm-starts the block, e.g. with
the previous training step's ``info.block``: an unchanged graph needs 0 iterations, a
1% perturbation 1-3 instead of 4-8. It is a library feature for callers that solve the
same graph again (a fixed image across optimisation steps); the spectral head does not
use it, because each training step builds the graphs of a different batch of images,
for which the last step's block is no better a start than a random one.

Why this algorithm. Its cost is sparse products, m columns at once (accumulated in place
by ``addmm_``), plus one m-column Rayleigh-Ritz every d products. A block LOBPCG needs
about as many products but orthonormalises and projects a 3m-column basis per
iteration, and that dense work made it several times slower; a restarted block Lanczos method
carries the same dense cost and was not pursued. The measured comparison with LOBPCG is
in docs/spectral_head.md ("Why a filtered block iteration"), the benchmark against
scipy's eigsh and torch.lobpcg in experiments/results/bench_partial_eigh.md
(experiments/bench_partial_eigh.py).

Non-convergence within ``max_iter`` iterations: ``on_fail="warn"`` (a RuntimeWarning
naming the residual reached), ``"raise"`` (:class:`PartialEighNotConverged`) or
``"dense"`` (``torch.linalg.eigh`` of the dense Laplacian when N <= ``dense_limit``,
else a warning). Non-finite eigenpairs are never returned: unless ``on_fail="raise"``
they are replaced by the dense solve (with the warning) when N <= ``dense_limit``, and
raise :class:`PartialEighNotConverged` otherwise. A graph without any edge (L = D - W
= 0, whose a-priori bound 2 max d is 0) is solved with 1 as the bound.

Backward: implicit differentiation, O(nnz k) memory
---------------------------------------------------
With gλ = ∂ℓ/∂λ, g_i = ∂ℓ/∂u_i and U the k returned vectors, the gradient with respect to
the (symmetric) Laplacian is G_L = sym(A Uᵀ), sym(X) = (X + Xᵀ)/2, never formed, with
A = U (diag(gλ) + F ∘ (Uᵀ g)) + X (g the N x k matrix of the g_i):

* in-subspace: F_ij = ``gap_reciprocal``(λ_j - λ_i) (``backward`` mode: exact,
  lorentzian (default), clamp, taylor, pade), as in :func:`cheeger.ops.eigh.eigh`, so
  a repeated eigenvalue inside the block gives bounded gradients. Guard vectors tied
  with λ_k (θ - λ_k < 10 ε, regularised modes only) join this block, which keeps the
  gradient bounded when a repeated eigenvalue straddles the cut at k;
* out-of-subspace: column x_i solves P (L - λ_i I) P x_i = -P g_i with P = I - E Eᵀ (E:
  U and those tied guards), by conjugate gradients batched over B and the k columns.
  On range P the operator is positive definite (λ_i lies below the spectrum left
  there). It is preconditioned with the remaining guard Ritz pairs (Z, θ):
  T_i = Z diag(1/(θ - λ_i)) Zᵀ + (P - Z Zᵀ)/(λ_max - λ_i), which makes the condition
  number depend on the gap to λ_{m+1} instead of λ_{k+1}. Stopping rule: each column
  stops when its preconditioned residual norm sqrt(rᵀ T r) falls below ``backward_tol``
  (default: ``tol``) times its initial value; all stop at ``backward_max_iter`` (then a
  warning, or an error with ``on_fail="raise"``). ``out_of_subspace=False`` (or
  ``backward="topk"``, which also selects lorentzian inside) drops x, giving the
  "truncated" gradient of published partial-eigensolver code: 50-65% off the exact
  gradient in the tests.

The map from G_L to the edge weights uses that <G_L, L(w)> is linear in L: its gradient
in w is the weight gradient sought, and <sym(A Uᵀ), L> = (Σ a_cᵀ L u_c + Σ u_cᵀ L a_c)/2 is
one ``laplacian_matvec`` of 2k columns differentiated by autograd. Every slot is thus an
independent entry W[i, index[i, j]] with degrees as row sums, exactly as in the dense
construction (``laplacian_to_dense``); the two slots of an undirected edge each receive
their own share, which add up to the derivative in the edge weight. Time and memory
O(nnz k + N m); no N x N matrix is ever formed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cheeger.ops.backward_modes import (
    GAP_MODES,
    check_backward_mode,
    check_eps,
    gap_reciprocal,
    resolve_order,
)
from cheeger.ops.checks import check_bool, check_int, check_number
from cheeger.ops.eigh import SIGN_CONVENTIONS, canonicalize_eigenvector_signs
from cheeger.ops.graph import NeighborGraph, check_weights, degree
from cheeger.ops.laplacian import (
    LaplacianKind,
    inverse_degree_power,
    lambda_max_bound,
    laplacian_kind,
    laplacian_matvec,
    laplacian_to_dense,
)

PARTIAL_BACKWARD_MODES: tuple[str, ...] = (*GAP_MODES, "topk")
"""Backward modes of :func:`partial_eigh`: the gap-only modes of ``cheeger.ops.eigh`` and
``topk`` (= lorentzian in the subspace, ``out_of_subspace=False``)."""

ON_FAIL: tuple[str, ...] = ("warn", "raise", "dense")
METHODS: tuple[str, ...] = ("chebyshev", "dense")

DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-8}
"""Relative residual tolerance ||L u - λ u|| / λ_upper used when ``tol`` is None."""

# Lanczos steps of the λ_max estimate that sets the top of the filters' damped interval.
_LANCZOS_STEPS = 20
# Most iterations of the subspace loop or of the backward's CG run between two checks
# of convergence (each check reads the device: a synchronisation on a GPU).
_MAX_UNCHECKED = 32

# Guard vectors within NEAR_GAP * eps of λ_k join the regularised block in the backward.
NEAR_GAP = 10.0


class PartialEighNotConverged(RuntimeError):
    """Raised by :func:`partial_eigh` with ``on_fail="raise"`` (message: achieved residual)."""


@dataclass
class PartialEighInfo:
    """What the solver did; the backward fields are filled when the backward runs.

    Attributes:
        method: "chebyshev" or "dense" (the dense fallback or ``method="dense"``).
        iterations: filter (outer) iterations of the subspace iteration.
        matvecs: products L x counted per column (a block of m columns counts m),
            the 20 single-vector products of the λ_max estimate included.
        residuals: (B, k) relative residuals ||L u_i - λ_i u_i|| / λ_upper.
        max_residual: their maximum (float).
        converged: whether ``max_residual <= tol``.
        tol: the tolerance used.
        block: (B, N, m) the whole orthonormal Ritz block, guard vectors included,
            detached: pass it as ``X0`` to warm-start the next solve.
        block_values: (B, m) its Ritz values.
        backward_iterations: conjugate-gradient iterations of the last backward.
        backward_residual: its largest relative residual.
        fallback: whether ``on_fail="dense"`` replaced a non-converged result.

    For ``kind="random_walk"`` the residuals are those of the symmetric problem solved.
    """

    method: str
    iterations: int
    matvecs: int
    residuals: Tensor
    max_residual: float
    converged: bool
    tol: float
    block: Tensor
    block_values: Tensor
    backward_iterations: int | None = None
    backward_residual: float | None = None
    fallback: bool = False


class PartialEighResult(NamedTuple):
    """eigenvalues (B, k) ascending, eigenvectors (B, N, k), info (:class:`PartialEighInfo`)."""

    eigenvalues: Tensor
    eigenvectors: Tensor
    info: PartialEighInfo


# --------------------------------------------------------------------------- operator


class _LaplacianOperator:
    """X -> L X for a symmetric Laplacian on (B, N, m) blocks, no autograd.

    L = diag(scale) - A, with A = W and scale = d ("unnormalized") or A = D^-1/2 W D^-1/2
    and scale = 1 ("symmetric"). A is held as one CSR matrix per batch element, with the
    zero slots (padding, capped edges; half the slots of a degree-capped kNN graph)
    dropped and 32-bit indices: the products accumulate in place into their output
    (``addmm_``), which on CPU was twice as fast as a product followed by elementwise
    updates, and take Python scalars, so each element gets its own filter coefficients.
    """

    def __init__(self, graph: NeighborGraph, kind: LaplacianKind, eps: float | None) -> None:
        index, weight = graph.index, graph.weight.detach()
        batch, num_nodes, slots = index.shape
        plain = NeighborGraph.derived(index, weight)
        if kind is LaplacianKind.UNNORMALIZED:
            values = weight
            self.scale = degree(plain).unsqueeze(-1)  # (B, N, 1)
        else:
            s = inverse_degree_power(plain, 0.5, eps)
            neighbour = s.gather(1, index.reshape(batch, -1)).view(batch, num_nodes, slots)
            values = weight * s.unsqueeze(-1) * neighbour
            self.scale = None
        self.bound = _spectrum_bound(plain, kind).view(batch, 1, 1)
        self.upper = self.bound
        self.upper_list = [float(v) for v in self.upper.view(-1)]
        self.matrices = [_compact_csr(index[b], values[b]) for b in range(batch)]

    def tighten_upper(self, steps: int, generator: torch.Generator) -> None:
        """Replace the a-priori bound by a Lanczos estimate of λ_max, where smaller.

        The Chebyshev filters damp [cut, upper], and their convergence rate depends on
        how far the cut sits from the bottom of that interval relative to its width; the
        a-priori bounds (2, or 2 max d) exceed λ_max by 35-80% on kNN and grid graphs.
        ``steps`` Lanczos steps from a random vector give the top Ritz value θ and its
        residual r = β |z_last|; an eigenvalue lies within r of θ, and after 20 steps it
        is λ_max itself in every graph we tried (θ + r >= λ_max held with room to spare).
        A 1% margin is added on top. An underestimate would not make the results wrong,
        only the filter less effective: the Rayleigh-Ritz step and the residual test
        decide what converged.
        """
        batch, num_nodes = self.bound.shape[0], self.matrices[0].shape[0]
        steps = min(steps, num_nodes)
        dtype, device = self.bound.dtype, self.bound.device
        v = torch.randn(batch, num_nodes, 1, generator=generator, dtype=dtype, device=device)
        v = v / _column_norms(v).unsqueeze(-2)
        before = torch.zeros_like(v)
        beta = torch.zeros(batch, 1, 1, dtype=dtype, device=device)
        # An exhausted Krylov space (beta = 0: the estimate is already exact) continues
        # harmlessly from a zero vector; no per-step host synchronisation.
        floor = torch.finfo(dtype).tiny
        alphas, betas = [], []
        for _ in range(steps):
            w = torch.addcmul(self(v), beta, before, value=-1.0)
            alpha = torch.linalg.vecdot(w, v, dim=-2).unsqueeze(-2)
            w = torch.addcmul(w, alpha, v, value=-1.0)
            beta = _column_norms(w).unsqueeze(-2)
            alphas.append(alpha.view(batch))
            betas.append(beta.view(batch))
            before, v = v, w / beta.clamp_min(floor)
        off = torch.stack(betas[:-1], -1) if len(betas) > 1 else None
        tridiagonal = torch.diag_embed(torch.stack(alphas, -1))
        if off is not None:
            tridiagonal = tridiagonal + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        theta, z = torch.linalg.eigh(tridiagonal)
        estimate = theta[:, -1] + betas[-1] * z[:, -1, -1].abs()
        estimate = estimate + 0.01 * theta[:, -1].abs()
        upper = torch.minimum(self.bound.view(-1), estimate)
        # L = 0 (no edge) gives an estimate of 0; the filters need an interval of width > 0.
        self.upper = torch.where(upper > 0, upper, self.bound.view(-1)).view(batch, 1, 1)
        self.upper_list = [float(v) for v in self.upper.view(-1)]

    def __call__(self, x: Tensor) -> Tensor:
        out = (
            x.clone(memory_format=torch.contiguous_format) if self.scale is None else self.scale * x
        )
        for b, matrix in enumerate(self.matrices):
            out[b].addmm_(matrix, x[b], alpha=-1.0)
        return out

    def shifted(self, x: Tensor, shift: Tensor) -> Tensor:
        """(L - shift I) x with one shift per column, shift (B, 1, m)."""
        out = x * ((1.0 if self.scale is None else self.scale) - shift)
        for b, matrix in enumerate(self.matrices):
            out[b].addmm_(matrix, x[b], alpha=-1.0)
        return out


def _compact_csr(index: Tensor, values: Tensor) -> Tensor:
    """(N, N) CSR matrix of one element's nonzero slots (duplicates are summed by products)."""
    num_nodes, slots = index.shape
    nonzero = values != 0
    crow = torch.zeros(num_nodes + 1, dtype=torch.int64, device=index.device)
    crow[1:] = torch.cumsum(nonzero.sum(-1), dim=0)
    small = int(crow[-1]) < 2**31 - 1
    index_dtype = torch.int32 if small else torch.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow.to(index_dtype),
            index[nonzero].to(index_dtype),
            values[nonzero],
            (num_nodes, num_nodes),
            check_invariants=False,
        )


def _spectrum_bound(graph: NeighborGraph, kind: LaplacianKind) -> Tensor:
    """``lambda_max_bound``, (B,), with 1 where it is 0 (L = D - W of a graph without edges).

    It scales the relative residuals and tops the filters' damped interval; for L = 0 any
    positive number bounds the spectrum, and 0 would divide by zero in both.
    """
    bound = lambda_max_bound(graph, kind)
    return torch.where(bound > 0, bound, torch.ones_like(bound))


# --------------------------------------------------------------------------- dense kernels


def _column_norms(y: Tensor) -> Tensor:
    """Euclidean norms of the columns of y (B, N, m) -> (B, m).

    As a dot product, O(N m): torch's ``norm(dim=-2)`` reduces over the strided
    dimension, which is an order of magnitude slower on CPU.
    """
    return torch.linalg.vecdot(y, y, dim=-2).sqrt()


def _orthonormalize(y: Tensor) -> Tensor:
    """An orthonormal basis (B, N, m) of the columns of y (B, N, m), by Householder QR.

    Columns are normalised first: filtered blocks have norms spread over many orders of
    magnitude. Householder QR is orthonormal to working precision whatever the
    conditioning or rank of the block, so nothing is checked on the host. The checked
    Cholesky-QR it replaced (repeated until the Gram matrix was the identity, QR when a
    factorisation failed) read the device 3 to 5 times per call and was no faster on
    CPU. Cost O(N m²).
    """
    y = y / _column_norms(y).unsqueeze(-2).clamp_min(torch.finfo(y.dtype).tiny)
    return torch.linalg.qr(y).Q


def _project_out(y: Tensor, basis: Tensor) -> Tensor:
    """y - basis (basis^T y), twice (classical Gram-Schmidt with reorthogonalisation)."""
    for _ in range(2):
        y = torch.baddbmm(y, basis, basis.mT @ y, alpha=-1.0)
    return y


def _rayleigh_ritz(operator: _LaplacianOperator, basis: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (B, m) ascending, Ritz vectors and their images L X, of an orthonormal basis."""
    image = operator(basis)
    return _rotate_to_ritz(basis, image)


def _rotate_to_ritz(basis: Tensor, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    projected = basis.mT @ image
    values, rotation = torch.linalg.eigh(0.5 * (projected + projected.mT))
    return values, basis @ rotation, image @ rotation


def _relative_residuals(values: Tensor, vectors: Tensor, image: Tensor, upper: Tensor) -> Tensor:
    """||L u_i - θ_i u_i|| / λ_upper, (B, m)."""
    residual = image - vectors * values.unsqueeze(-2)
    return _column_norms(residual) / upper.view(-1, 1)


def _chebyshev_filter(
    operator: _LaplacianOperator,
    x: Tensor,
    degree: int,
    cuts: list[float],
    locked: Tensor | None,
    locked_shift: Tensor | None,
) -> Tensor:
    """p(L') X with p the degree-d Chebyshev polynomial damping [cut, λ_upper], p(0) = 1.

    p(λ) = T_d((λ - c)/e) / T_d(-c/e), c and e the centre and half-width of
    [cut, λ_upper]: |p| <= 1/|T_d(c/e)| on [cut, λ_upper], and eigenvalues below the
    cut are amplified relative to those above. The recurrence is carried in the scaled
    form of Zhou & Saad (2007), which keeps every iterate O(1):

        Y_1 = (σ_1/e) (L - c) X,   Y_{j+1} = (2σ_{j+1}/e) (L - c) Y_j - σ_j σ_{j+1} Y_{j-1},
        σ_1 = e/(0 - c),           σ_{j+1} = 1/(2/σ_1 - σ_j).

    L' = L + V diag(λ_upper - θ) Vᵀ moves the locked (converged) Ritz vectors V to the
    top of the damped interval. Without it they would sit at the bottom of the spectrum,
    where the filter amplifies most: their rounding-level remainder in the active block
    would be multiplied by up to T_d(c/e) (1e10 for d = 24 on a kNN graph) and, in
    float32, swamp the columns still converging (measured: stagnation at a residual of
    1e-4 with d = 24).

    x: (B, N, m); cuts: one per batch element; locked: (B, N, p) or None;
    locked_shift: (B, p, 1).
    """
    out = torch.empty_like(x)
    for b, matrix in enumerate(operator.matrices):
        upper = operator.upper_list[b]
        half = 0.5 * (upper - cuts[b])
        centre = 0.5 * (upper + cuts[b])
        diagonal = None if operator.scale is None else operator.scale[b] - centre
        centre_shift = 1.0 - centre
        vectors = None if locked is None else locked[b]
        shift = None if locked_shift is None else locked_shift[b]

        terms = (matrix, centre_shift, diagonal, vectors, shift)
        sigma_first = -half / centre
        sigma = sigma_first
        previous = x[b].clone(memory_format=torch.contiguous_format)
        current = torch.zeros_like(previous)
        _filter_step(current, previous, sigma_first / half, *terms)
        for _ in range(degree - 1):
            sigma_next = 1.0 / (2.0 / sigma_first - sigma)
            previous.mul_(-sigma * sigma_next)
            _filter_step(previous, current, 2.0 * sigma_next / half, *terms)
            previous, current, sigma = current, previous, sigma_next
        out[b] = current
    return out


def _filter_step(
    target: Tensor,
    source: Tensor,
    coefficient: float,
    matrix: Tensor,
    centre_shift: float,
    diagonal: Tensor | None,
    vectors: Tensor | None,
    shift: Tensor | None,
) -> None:
    """target += coefficient (L' - c) source, in place, for one batch element.

    L - c = diag - A with diag = 1 - c (``centre_shift``, symmetric) or d - c
    (``diagonal``, unnormalized); L' adds V diag(shift) Vᵀ for the locked vectors V.
    """
    if diagonal is None:
        target.add_(source, alpha=coefficient * centre_shift)
    else:
        target.addcmul_(diagonal, source, value=coefficient)
    target.addmm_(matrix, source, alpha=-coefficient)
    if vectors is not None:
        target.addmm_(vectors, shift * (vectors.mT @ source), alpha=coefficient)


def _degree_needed(
    values: Tensor, residuals: Tensor, cut: Tensor, upper: Tensor, tol: float
) -> Tensor:
    """Filter degree predicted to bring every wanted residual down to tol, 0-d tensor.

    Relative to a Ritz value θ below the cut, the filter damps what lies in
    [cut, λ_max] by 1/T_d(γ), γ = (c - θ)/e (c, e: centre and half-width of the damped
    interval), so a residual r needs about d = acosh(r/tol)/acosh(γ). The estimate
    ignores the eigenvalues between θ and the cut (the Rayleigh-Ritz step deals with
    those), so the degree of an iteration is twice it (``_plan_iterations``).
    """
    half = 0.5 * (upper - cut).unsqueeze(-1)
    centre = 0.5 * (upper + cut).unsqueeze(-1)
    gamma = ((centre - values) / half).clamp_min(1.0 + 1e-6)
    ratio = (residuals / tol).clamp_min(1.0)
    return torch.where(residuals > tol, torch.acosh(ratio) / torch.acosh(gamma), 0.0).amax()


def _plan_iterations(need: float, degree: int, cap: int) -> tuple[int, int]:
    """(filter degree, iterations to run before the next convergence check).

    ``need`` is ``_degree_needed``'s estimate. When it fits in one iteration, that
    iteration gets degree 2 need (at most ``degree``; a fixed degree would overshoot
    the tolerance by orders of magnitude on the last iteration: 1e-7 reached for
    tol = 1e-4 on clustered kNN graphs), and the check follows it. Otherwise half the
    iterations that the estimate says are still needed at full degree run without a
    check, at most ``cap``: a check reads the device (a synchronisation on a GPU). Half,
    because the locking and the cut are only updated at checks: running the whole
    estimate unchecked cost 2 extra iterations in 9 (float64 kNN graph, N = 16,000).
    """
    if not math.isfinite(need):
        return degree, 1
    steps = int(min(degree, max(2, math.ceil(2.0 * need))))
    return steps, int(min(cap, max(1, math.floor(0.5 * need / degree))))


@dataclass
class _Ritz:
    values: Tensor  # (B, m) ascending
    vectors: Tensor  # (B, N, m)
    residuals: Tensor  # (B, m)
    iterations: int
    matvecs: int


def _sort_columns(values: Tensor, *blocks: Tensor) -> tuple[Tensor, ...]:
    order = values.argsort(dim=-1)
    gather = order.unsqueeze(1).expand(-1, blocks[0].shape[1], -1)
    return (values.gather(-1, order), *(b.gather(-1, gather) for b in blocks))


def _chebyshev_subspace_iteration(
    operator: _LaplacianOperator,
    start: Tensor,
    k: int,
    tol: float,
    max_iter: int,
    degree: int,
    min_iter: int = 0,
) -> _Ritz:
    """Chebyshev-filtered subspace iteration with Rayleigh-Ritz and hard locking.

    Each iteration filters the active columns of the block (B, N, m) with the polynomial
    damping [θ_m, λ_upper] (θ_m the largest current Ritz value), orthonormalises them
    against the locked ones and projects L onto them (Rayleigh-Ritz). The leading Ritz
    pairs that have converged in every batch element are locked: kept, no longer
    filtered. Stops when the k leading relative residuals are <= tol (after at least
    ``min_iter`` iterations), or after ``max_iter`` filter iterations. A last
    Rayleigh-Ritz over the whole block (its images are kept, so no product) couples the
    locked and active pairs.

    Why ``min_iter``: a small residual says that a Ritz value is close to *an*
    eigenvalue, not to one of the smallest. A random start block projects onto a random
    subspace that may nearly miss the lowest eigenvector, and its Ritz pairs can pass the
    residual test all the same when the spectrum is wide (fuzzing found a float32 graph
    with weights 9 to 24,000 where the unfiltered start returned λ_2 = 30.6 for λ_1 = 0,
    with a relative residual of 3e-5). One filter pass amplifies the bottom of the
    spectrum before anything is accepted.
    """
    bound = operator.bound
    width = start.shape[-1]
    values, vectors, image = _rayleigh_ritz(operator, _orthonormalize(start))
    matvecs = width
    residuals = _relative_residuals(values, vectors, image, bound)
    # A cut at 0 would make the filter flat (nothing amplified); the floor only matters
    # when m Ritz values are ~0, i.e. at least m connected components, all converged.
    upper_flat = operator.upper.view(-1)
    floor = 1e-3 * upper_flat
    iterations, planned = 0, 0
    locked, cuts, steps = 0, [], degree
    while iterations < max_iter:
        if planned == 0:
            # The one host read of a check: convergence per column, the cut per batch
            # element and the degree still needed, in a single transfer.
            cut = torch.minimum(torch.maximum(values[:, -1], floor), 0.999 * upper_flat)
            converged = (residuals[:, :k] <= tol).all(dim=0)
            need = _degree_needed(values[:, :k], residuals[:, :k], cut, upper_flat, tol)
            read = torch.cat([converged.to(cut.dtype), cut, need.view(1)]).tolist()
            flags, cuts, need_value = read[:k], read[k:-1], read[-1]
            if iterations >= min_iter and all(flags):
                break
            locked = next((i for i, flag in enumerate(flags) if not flag), k)
            steps, planned = _plan_iterations(need_value, degree, _MAX_UNCHECKED)
        kept = vectors[..., :locked] if locked else None
        shift = (operator.upper.view(-1, 1) - values[:, :locked]).unsqueeze(-1) if locked else None
        filtered = _chebyshev_filter(operator, vectors[..., locked:], steps, cuts, kept, shift)
        if locked:
            filtered = _project_out(filtered, kept)
        basis = _orthonormalize(filtered)
        if locked:
            basis = _orthonormalize(_project_out(basis, kept))
        new_values, new_vectors, new_image = _rayleigh_ritz(operator, basis)
        matvecs += (steps + 1) * (width - locked)
        values = torch.cat([values[:, :locked], new_values], dim=-1)
        vectors = torch.cat([vectors[..., :locked], new_vectors], dim=-1)
        image = torch.cat([image[..., :locked], new_image], dim=-1)
        if locked:
            values, vectors, image = _sort_columns(values, vectors, image)
        residuals = _relative_residuals(values, vectors, image, bound)
        iterations += 1
        planned -= 1
    if iterations:
        # Locked and active pairs were projected separately; one projection of the
        # whole block couples them (cheap: the images are kept). Rounding can move a
        # residual that sat just below tol above it, so the result is kept only if the
        # k leading residuals stay within max(tol, their previous maximum).
        rotated = _rotate_to_ritz(vectors, image)
        rotated_residuals = _relative_residuals(*rotated, bound)
        before, after = torch.stack(
            [residuals[:, :k].amax(), rotated_residuals[:, :k].amax()]
        ).tolist()
        if after <= max(tol, before):
            values, vectors, image = rotated
            residuals = rotated_residuals
    return _Ritz(values, vectors, residuals, iterations, matvecs)


def _dense_ritz(graph: NeighborGraph, kind: LaplacianKind, eps: float | None, width: int) -> _Ritz:
    """The m smallest eigenpairs by torch.linalg.eigh of the dense Laplacian."""
    detached = NeighborGraph.derived(graph.index, graph.weight.detach())
    matrix = laplacian_to_dense(detached, kind, eps)
    values, vectors = torch.linalg.eigh(matrix)
    values, vectors = values[:, :width], vectors[..., :width]
    upper = _spectrum_bound(detached, kind)
    image = matrix @ vectors
    residuals = _relative_residuals(values, vectors, image, upper.view(-1, 1, 1))
    return _Ritz(values, vectors, residuals, 0, 0)


# --------------------------------------------------------------------------- backward


def _out_of_subspace_solve(
    operator: _LaplacianOperator,
    shifts: Tensor,
    deflated: Tensor,
    far_vectors: Tensor,
    far_values: Tensor,
    rhs: Tensor,
    tol: float,
    max_iter: int,
    curvature_floor: float = 0.0,
) -> tuple[Tensor, int, float]:
    """Solve P (L - λ_c I) P x_c = rhs_c (rhs in range P) by preconditioned CG, batched.

    P = I - E Eᵀ with E = ``deflated`` (B, N, r) orthonormal (its zero columns are
    ignored). On range P the operator is positive definite when λ_c is below the
    spectrum left in range P, which holds for the k smallest eigenvalues once every
    eigenvalue tied with them is in E. The preconditioner inverts it exactly on the
    far guard vectors Z (Ritz vectors above the returned block, orthogonal to E):

        T_c = Z diag(1/(θ_j - λ_c)) Zᵀ + (P - Z Zᵀ) / (λ_max - λ_c),

    (λ_max: the forward's estimate, else the a-priori bound) so, were Z exact
    eigenvectors, T_c P (L - λ_c) P would have its spectrum in
    [(λ_{m+1} - λ_c)/(λ_max - λ_c), 1]: the condition number is set by the gap to the
    first eigenvalue beyond the whole block, not the one beyond λ_k. Inexact Z only slow
    CG down; the solution is that of the unpreconditioned system.

    Stopping rule: column c stops when its preconditioned residual norm
    sqrt(r_cᵀ T_c r_c) has fallen below tol times its initial value (the quantity CG
    carries anyway; T_c is within a factor (λ_max - λ_c)/(θ_j - λ_c) of a multiple of
    the identity); all stop after ``max_iter`` iterations. Returns x (B, N, k), the
    iterations and the largest relative (unpreconditioned) residual ||r_c|| / ||rhs_c||.

    Singular systems. When an eigenvalue tied with λ_c lies outside E (the block missed
    a copy of a repeated eigenvalue), the system is singular and inconsistent, and CG
    would grow x along that direction without bound. A column therefore also stops
    when its search direction's curvature pᵀ A p / pᵀ p drops to ``curvature_floor``
    (the mode's ε; 0 for ``exact``): directions with gaps below ε are the ones the
    regularised modes damp to ~0 (F(Δ) -> 0 as Δ -> 0 for lorentzian), so no step is
    taken along them and the gradient stays bounded.
    """
    lam = shifts.unsqueeze(-2)  # (B, 1, k)
    upper = operator.upper
    rest_scale = 1.0 / (upper - lam).clamp_min(1e-3 * upper)
    guard_scale = 1.0 / (far_values.unsqueeze(-1) - lam).clamp_min(1e-3 * upper)  # (B, g, k)
    guard_scale = guard_scale - rest_scale  # T r = r / σ + Z ((1/(θ - λ) - 1/σ) ∘ Zᵀ r)

    def precondition(r: Tensor) -> Tensor:
        return torch.baddbmm(r * rest_scale, far_vectors, guard_scale * (far_vectors.mT @ r))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return torch.linalg.vecdot(a, b, dim=-2).unsqueeze(-2)  # (B, 1, k)

    tiny = torch.finfo(rhs.dtype).tiny
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precondition(r)
    p = z.clone()
    rz = dot(r, z)
    threshold = (tol * tol) * rz
    active = rz > threshold.clamp_min(tiny)
    iterations, planned, previous, since = 0, 0, None, 1
    while iterations < max_iter:
        if planned == 0:
            # A check: one read of how far the slowest active column still is from its
            # threshold, in orders of magnitude (0 when none is active). Finished
            # columns are frozen by the masks below, so iterations run past the end of
            # the slowest one change nothing; the next check comes after the iterations
            # that the decrease since the last check says are left.
            remaining = torch.where(active, (rz / threshold.clamp_min(tiny)).log10(), 0.0)
            behind = max(remaining.amax().item(), 0.0)
            if behind == 0.0:
                break
            # CG often speeds up as it goes, so the plan may at most double the last run.
            rate = (previous - behind) / since if previous is not None else 0.0
            cap = min(_MAX_UNCHECKED, 2 * since) if previous is not None else 1
            planned = int(min(cap, max(1, behind // rate))) if rate > 0 else 1
            previous, since = behind, planned
        q = operator.shifted(p, lam)
        q = q.baddbmm_(deflated, deflated.mT @ q, alpha=-1.0)
        pq = dot(p, q)
        active = active & (pq > curvature_floor * dot(p, p)) & (pq > tiny)
        alpha = torch.where(active, rz / pq.clamp_min(tiny), 0.0)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1.0)
        z = precondition(r)
        rz_next = dot(r, z)
        beta = torch.where(active, rz_next / rz.clamp_min(tiny), 0.0)
        p.mul_(beta).add_(z)
        rz = rz_next
        active = active & (rz > threshold)
        iterations += 1
        planned -= 1
    rhs_norm = _column_norms(rhs).clamp_min(tiny)
    residual = rhs - _project_out(operator.shifted(x, lam), deflated)
    relative = float((_column_norms(residual) / rhs_norm).amax())
    return x, iterations, relative


def _weight_gradient(
    index: Tensor,
    weight: Tensor,
    kind: LaplacianKind,
    eps: float | None,
    left: Tensor,
    right: Tensor,
) -> Tensor:
    """∂/∂weight of <sym(left rightᵀ), L(weight)>, by autograd through laplacian_matvec.

    <sym(A Bᵀ), L> = (Σ a_cᵀ L b_c + Σ b_cᵀ L a_c)/2 is linear in L, and laplacian_matvec
    treats every slot as an independent entry W[i, index[i, j]] (degrees as row sums),
    exactly as the dense construction does, so the slot gradients come out right for
    symmetric storage. One product with 2k columns, O(nnz k) time and memory.
    """
    with torch.enable_grad():
        leaf = weight.detach().requires_grad_(True)
        graph = NeighborGraph.derived(index, leaf)
        k = left.shape[-1]
        image = laplacian_matvec(graph, torch.cat([right, left], dim=-1), kind, eps)
        pairing = 0.5 * ((left * image[..., :k]).sum() + (right * image[..., k:]).sum())
        (grad,) = torch.autograd.grad(pairing, leaf)
    return grad


@dataclass(frozen=True)
class _Options:
    k: int
    kind: LaplacianKind
    laplacian_eps: float | None
    tol: float
    max_iter: int
    degree: int
    method: str
    on_fail: str
    dense_limit: int
    mode: str
    eps: float
    order: int | None
    out_of_subspace: bool
    backward_tol: float
    backward_max_iter: int
    sign: str | None
    seed: int
    warm: bool


class _PartialEigh(torch.autograd.Function):
    """(weight, index) -> (λ (B, k), U (B, N, k)); backward by implicit differentiation."""

    @staticmethod
    def forward(ctx, weight, index, start, options: _Options, sink: list):
        graph = NeighborGraph.derived(index, weight.detach())
        k = options.k
        width = start.shape[-1]
        fallback = False
        operator = None
        if options.method == "dense":
            ritz = _dense_ritz(graph, options.kind, options.laplacian_eps, width)
            method = "dense"
        else:
            operator = _LaplacianOperator(graph, options.kind, options.laplacian_eps)
            generator = torch.Generator(device=weight.device).manual_seed(options.seed + 1)
            operator.tighten_upper(_LANCZOS_STEPS, generator)
            # A random start block must be filtered once before its pairs are trusted;
            # a warm start (X0) or a block spanning the whole space need not be.
            cold = not options.warm and width < index.shape[1]
            ritz = _chebyshev_subspace_iteration(
                operator, start, k, options.tol, options.max_iter, options.degree, int(cold)
            )
            ritz.matvecs += _LANCZOS_STEPS
            method = "chebyshev"
        max_residual = float(ritz.residuals[:, :k].amax())
        # NaN residuals fail this test too; non-finite pairs are never returned (below).
        if method == "chebyshev" and not max_residual <= options.tol:
            finite = bool(
                torch.isfinite(ritz.values[:, :k]).all() and torch.isfinite(ritz.vectors).all()
            )
            message = (
                f"partial_eigh did not converge: relative residual {max_residual:.3g} > "
                f"tol = {options.tol:.3g} after {ritz.iterations} iterations (max_iter = "
                f"{options.max_iter})" + ("" if finite else ", with non-finite eigenpairs")
            )
            num_nodes = index.shape[1]
            if options.on_fail == "raise":
                raise PartialEighNotConverged(message)
            if (options.on_fail == "dense" or not finite) and num_nodes <= options.dense_limit:
                iterations, matvecs = ritz.iterations, ritz.matvecs
                ritz = _dense_ritz(graph, options.kind, options.laplacian_eps, width)
                ritz.iterations, ritz.matvecs = iterations, matvecs
                method, fallback = "dense", True
                max_residual = float(ritz.residuals[:, :k].amax())
                if options.on_fail == "warn":
                    warnings.warn(f"{message}; solved densely", RuntimeWarning, stacklevel=4)
            elif not finite:
                raise PartialEighNotConverged(
                    f"{message}; N = {num_nodes} > dense_limit = {options.dense_limit}, so "
                    "there is no dense fallback"
                )
            else:
                if options.on_fail == "dense":
                    message += f"; N = {num_nodes} > dense_limit = {options.dense_limit}"
                warnings.warn(message, RuntimeWarning, stacklevel=4)
        vectors = ritz.vectors
        if options.sign is not None:
            vectors = canonicalize_eigenvector_signs(vectors)
        values = ritz.values
        info = PartialEighInfo(
            method=method,
            iterations=ritz.iterations,
            matvecs=ritz.matvecs,
            residuals=ritz.residuals[:, :k].clone(),
            max_residual=max_residual,
            converged=max_residual <= options.tol,
            tol=options.tol,
            block=vectors.detach().clone(),
            block_values=values.detach().clone(),
            fallback=fallback,
        )
        sink.append(info)
        ctx.save_for_backward(weight.detach(), index, values, vectors)
        ctx.operator = operator  # its CSR matrices and λ_max estimate serve the backward
        ctx.options = options
        ctx.info = info
        return values[:, :k].clone(), vectors[..., :k].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values, grad_vectors):
        weight, index, values, vectors = ctx.saved_tensors
        options = ctx.options
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        k = options.k
        lam, u = values[:, :k], vectors[..., :k]
        guard_values, guard_vectors = values[:, k:], vectors[..., k:]
        if grad_values is None:
            grad_values = torch.zeros_like(lam)
        if grad_vectors is None:
            grad_vectors = torch.zeros_like(u)

        # Guard vectors tied with λ_k (within NEAR_GAP ε) are coupled through the
        # regularised F like the returned ones; the others are left to the solve.
        if options.mode == "exact" or not options.out_of_subspace:
            near = torch.zeros_like(guard_values, dtype=torch.bool)
        else:
            near = guard_values - lam[:, -1:] < NEAR_GAP * options.eps
        rows = torch.cat([u, guard_vectors * near.unsqueeze(1)], dim=-1)
        row_values = torch.cat([lam, guard_values], dim=-1)
        delta = lam.unsqueeze(-2) - row_values.unsqueeze(-1)  # (B, k + g, k): λ_c - λ_r
        coupling = gap_reciprocal(delta, options.mode, options.eps, options.order)
        diagonal = torch.eye(row_values.shape[-1], k, dtype=torch.bool, device=lam.device)
        coupled = torch.cat([torch.ones_like(lam, dtype=torch.bool), near], -1)
        coupling = coupling.masked_fill(diagonal | ~coupled.unsqueeze(-1), 0.0)
        inner = coupling * (rows.mT @ grad_vectors)
        inner[:, :k] += torch.diag_embed(grad_values)
        left = rows @ inner

        if options.out_of_subspace:
            graph = NeighborGraph.derived(index, weight)
            operator = ctx.operator
            if operator is None:
                operator = _LaplacianOperator(graph, options.kind, options.laplacian_eps)
            far = ~near
            rhs = -_project_out(grad_vectors, rows)
            solution, iterations, residual = _out_of_subspace_solve(
                operator,
                lam,
                rows,
                guard_vectors * far.unsqueeze(1),
                torch.where(far, guard_values, operator.upper.view(-1, 1)),
                rhs,
                options.backward_tol,
                options.backward_max_iter,
                0.0 if options.mode == "exact" else options.eps,
            )
            left = left + solution
            ctx.info.backward_iterations = iterations
            ctx.info.backward_residual = residual
            if iterations >= options.backward_max_iter and residual > options.backward_tol:
                message = (
                    f"partial_eigh backward: conjugate gradients stopped at relative residual "
                    f"{residual:.3g} > backward_tol = {options.backward_tol:.3g} after "
                    f"backward_max_iter = {iterations} iterations"
                )
                if options.on_fail == "raise":
                    raise PartialEighNotConverged(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        grad_weight = _weight_gradient(index, weight, options.kind, options.laplacian_eps, left, u)
        return grad_weight, None, None, None, None


# --------------------------------------------------------------------------- public API


def check_partial_options(
    *,
    tol: float | None,
    max_iter: int,
    guard: int | None,
    degree: int,
    on_fail: str,
    dense_limit: int,
    backward: str,
    eps: float,
    out_of_subspace: bool,
    backward_tol: float | None,
    backward_max_iter: int,
    prefix: str = "",
) -> dict:
    """The one check of :func:`partial_eigh`'s graph-independent options.

    ``partial_eigh`` calls it on every call; ``PartialSolver`` calls it once at
    construction with ``prefix="solver."``, so that a bad config value fails before any
    data is read, named by its config key.

    Returns:
        The options, numbers as int/float (None kept: resolved per call).

    Raises:
        ValueError: ``"<prefix><name> must be ...; found <value>"``.
    """

    def positive(name: str, value: float | None) -> float | None:
        return None if value is None else check_number(prefix + name, value, 0, low_open=True)

    if on_fail not in ON_FAIL:
        raise ValueError(f"{prefix}on_fail must be one of {ON_FAIL}; found {on_fail!r}")
    return {
        "tol": positive("tol", tol),
        "max_iter": check_int(prefix + "max_iter", max_iter, 0),
        "guard": None if guard is None else check_int(prefix + "guard", guard, 0),
        "degree": check_int(prefix + "degree", degree, 1),
        "on_fail": on_fail,
        "dense_limit": check_int(prefix + "dense_limit", dense_limit, 1),
        "backward": check_backward_mode(backward, PARTIAL_BACKWARD_MODES, prefix + "backward"),
        "eps": check_eps(eps, prefix + "eps"),
        "out_of_subspace": check_bool(prefix + "out_of_subspace", out_of_subspace),
        "backward_tol": positive("backward_tol", backward_tol),
        "backward_max_iter": check_int(prefix + "backward_max_iter", backward_max_iter, 1),
    }


def _start_block(graph: NeighborGraph, width: int, start: Tensor | None, seed: int) -> Tensor:
    batch, num_nodes, _ = graph.index.shape
    weight = graph.weight
    generator = torch.Generator(device=weight.device).manual_seed(seed)
    fresh = width - (0 if start is None else start.shape[-1])
    noise = torch.randn(
        batch,
        num_nodes,
        max(fresh, 0),
        generator=generator,
        dtype=weight.dtype,
        device=weight.device,
    )
    if start is None:
        return noise
    return torch.cat([start.detach(), noise], dim=-1) if fresh > 0 else start.detach()


def partial_eigh(
    graph: NeighborGraph,
    k: int,
    kind: LaplacianKind | str = "symmetric",
    *,
    X0: Tensor | None = None,
    tol: float | None = None,
    max_iter: int = 200,
    guard: int | None = None,
    degree: int = 16,
    method: str = "chebyshev",
    on_fail: str = "warn",
    dense_limit: int = 4096,
    backward: str = "lorentzian",
    eps: float = 1e-4,
    order: int | None = None,
    out_of_subspace: bool = True,
    backward_tol: float | None = None,
    backward_max_iter: int = 1000,
    sign: str | None = "max_abs_positive",
    laplacian_eps: float | None = None,
    seed: int = 0,
) -> PartialEighResult:
    """The k smallest eigenpairs of each graph's Laplacian, differentiable in the weights.

    Algorithm, convergence test and backward: see the module docstring.

    Args:
        graph: symmetric NeighborGraph (B, N, K), float32 or float64 weights (finite,
            >= 0); gradients flow to ``graph.weight``.
        k: number of eigenpairs, 1 <= k <= N - 1.
        kind: "symmetric" (I - D^-1/2 W D^-1/2), "unnormalized" (D - W) or
            "random_walk" (I - D^-1 W: the symmetric problem, vectors mapped by D^-1/2).
        X0: optional warm start (B, N, m'), m' >= 1, same dtype and device, e.g. the
            ``info.block`` of a previous call; the block has max(k + guard, m')
            columns (at most N), missing ones drawn at random.
        tol: relative residual tolerance ||L u - λ u|| / λ_bound (None: 1e-4 in
            float32, 1e-8 in float64).
        max_iter: cap on filter iterations (each costs ``degree`` + 1 block products).
        guard: extra block columns beyond k (None: max(4, ceil(3k/4))).
        degree: largest Chebyshev filter degree d (each iteration uses the degree
            predicted to reach ``tol``, at most this).
        method: "chebyshev", or "dense" (torch.linalg.eigh of the dense Laplacian, the
            same backward; small N and testing).
        on_fail: "warn", "raise" or "dense" when the tolerance is not met in time
            (non-finite pairs: dense fallback up to ``dense_limit`` unless "raise").
        dense_limit: largest N for which ``on_fail="dense"`` falls back to dense.
        backward: in-subspace gap reciprocal, one of :data:`PARTIAL_BACKWARD_MODES`
            (``power_iteration`` needs the whole spectrum and is not offered).
        eps, order: ε and the series order of the gap reciprocal
            (:func:`cheeger.ops.backward_modes.gap_reciprocal`).
        out_of_subspace: keep the out-of-subspace term (complete gradient); False
            gives the truncated gradient.
        backward_tol, backward_max_iter: conjugate-gradient tolerance (None: ``tol``)
            and iteration cap of the out-of-subspace solve.
        sign: "max_abs_positive" (each vector's largest-magnitude entry positive, see
            :func:`cheeger.ops.eigh.canonicalize_eigenvector_signs`) or None.
        laplacian_eps: degrees <= this are isolated nodes (``cheeger.ops.laplacian``).
        seed: seed of the random start block and of the λ_max estimate.

    Returns:
        :class:`PartialEighResult` ``(eigenvalues (B, k) ascending, eigenvectors
        (B, N, k), info)``; both tensors differentiable in ``graph.weight`` (first
        order). ``info`` (:class:`PartialEighInfo`) holds iterations, residuals,
        ``converged`` and the warm-start block.

    Raises:
        ValueError: bad ``k`` (not in [1, N - 1]), weights (non-finite or negative),
            ``X0`` or option, naming the argument.
        PartialEighNotConverged: with ``on_fail="raise"``.

    Example:
        >>> import torch
        >>> from cheeger.ops.graph import NeighborGraph
        >>> index = torch.tensor([[[1, 0], [0, 2], [1, 3], [2, 4], [3, 4]]])  # path 0-...-4
        >>> weight = torch.tensor([[[1.0, 0], [1, 1], [1, 1], [1, 1], [1, 0]]], dtype=torch.float64)
        >>> values, vectors, info = partial_eigh(NeighborGraph(index, weight), 2, "unnormalized")
        >>> [round(abs(v), 4) for v in values[0].tolist()], vectors.shape, info.converged
        ([0.0, 0.382], torch.Size([1, 5, 2]), True)
    """
    if not isinstance(graph, NeighborGraph):
        raise ValueError(f"graph must be a NeighborGraph; found {type(graph).__name__}")
    weight, index = graph.weight, graph.index
    if weight.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"graph.weight must be float32 or float64; found {weight.dtype}")
    # NeighborGraph checks at construction; the weights may have changed in place since.
    check_weights(weight, "graph.weight")
    batch, num_nodes, _ = index.shape
    k = check_int("k", k, 1, num_nodes - 1, "N - 1")
    kind = laplacian_kind(kind)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; found {method!r}")
    checked = check_partial_options(
        tol=tol,
        max_iter=max_iter,
        guard=guard,
        degree=degree,
        on_fail=on_fail,
        dense_limit=dense_limit,
        backward=backward,
        eps=eps,
        out_of_subspace=out_of_subspace,
        backward_tol=backward_tol,
        backward_max_iter=backward_max_iter,
    )
    mode, out_of_subspace, eps = checked["backward"], checked["out_of_subspace"], checked["eps"]
    if mode == "topk":
        mode, out_of_subspace = "lorentzian", False
    order = resolve_order(mode, order)
    if sign not in SIGN_CONVENTIONS:
        raise ValueError(f"sign must be one of {SIGN_CONVENTIONS}; found {sign!r}")
    tol = DEFAULT_TOL[weight.dtype] if checked["tol"] is None else checked["tol"]
    backward_tol = tol if checked["backward_tol"] is None else checked["backward_tol"]
    max_iter, backward_max_iter = checked["max_iter"], checked["backward_max_iter"]
    degree, dense_limit = checked["degree"], checked["dense_limit"]
    guard = max(4, (3 * k + 3) // 4) if checked["guard"] is None else checked["guard"]
    if X0 is not None:
        if not isinstance(X0, Tensor) or X0.dim() != 3 or X0.shape[:2] != (batch, num_nodes):
            found = tuple(X0.shape) if isinstance(X0, Tensor) else type(X0).__name__
            raise ValueError(f"X0 must be (B, N, m) = ({batch}, {num_nodes}, m); found {found}")
        if X0.dtype != weight.dtype or X0.device != weight.device:
            raise ValueError(
                f"X0 must have dtype {weight.dtype} on {weight.device}; found {X0.dtype} on "
                f"{X0.device}"
            )
        if not bool(torch.isfinite(X0).all()):
            raise ValueError("X0 must be finite; found NaN or Inf entries")
    width = min(num_nodes, max(k + guard, 0 if X0 is None else X0.shape[-1]))
    start = _start_block(graph, width, None if X0 is None else X0[..., :width], seed)
    solve_kind = LaplacianKind.SYMMETRIC if kind is LaplacianKind.RANDOM_WALK else kind
    options = _Options(
        k=k,
        kind=solve_kind,
        laplacian_eps=laplacian_eps,
        tol=tol,
        max_iter=max_iter,
        degree=degree,
        method=method,
        on_fail=on_fail,
        dense_limit=dense_limit,
        mode=mode,
        eps=eps,
        order=order,
        out_of_subspace=out_of_subspace,
        backward_tol=backward_tol,
        backward_max_iter=backward_max_iter,
        sign=sign,
        seed=seed,
        warm=X0 is not None,
    )
    sink: list[PartialEighInfo] = []
    values, vectors = _PartialEigh.apply(weight, index, start, options, sink)
    if kind is LaplacianKind.RANDOM_WALK:
        scale = inverse_degree_power(graph, 0.5, laplacian_eps).unsqueeze(-1)
        vectors = scale * vectors
        if sign is not None:
            vectors = canonicalize_eigenvector_signs(vectors)
    return PartialEighResult(values, vectors, sink[0])
