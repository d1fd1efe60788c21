"""Batched cyclic Jacobi eigensolver for small symmetric matrices, written from scratch.

An independent oracle for the spectral ops (it shares no code with LAPACK) and a solver
for tiny matrices. Each sweep visits every pair (p, q) once, in the round-robin
("circle method") order: N - 1 rounds of N/2 disjoint pairs, so all rotations of a round
commute and are applied together with tensor operations on the whole batch. The matrix is
kept permuted so that the pairs of the current round are (i, i + N/2); a rotation round is
then four slices and a few products, and moving to the next round is one gather.

A rotation J(p, q, θ) with c = cos θ, s = sin θ replaces A by Jᵀ A J and zeroes a_pq when
t = tan θ is the smaller root of t² + 2τt - 1 = 0, τ = (a_qq - a_pp)/(2 a_pq)
(Golub & Van Loan, "Matrix Computations", §8.5), i.e. t = sign(τ)/(|τ| + √(1 + τ²)).
Cyclic Jacobi converges quadratically once the off-diagonal part is small; the loop
stops when ||off(A)||_F <= tol · ||A||_F for every matrix of the batch.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from numbers import Integral

import torch
from torch import Tensor

from cheeger.ops.eigh import canonicalize_eigenvector_signs, check_symmetric_matrix


@lru_cache(maxsize=32)
def _round_robin_layouts(n: int) -> tuple[tuple[int, ...], ...]:
    """For even n: n - 1 orderings of 0..n-1 whose halves pair up as (i, i + n/2).

    Circle method: player 0 stays, the others rotate by one seat per round, and the
    players in seat s and seat n - 1 - s meet. Over the n - 1 rounds every pair meets once.
    """
    half = n // 2
    layouts = []
    for r in range(n - 1):
        seats = [0] + [1 + (r + s) % (n - 1) for s in range(n - 1)]
        first = [seats[s] for s in range(half)]
        second = [seats[n - 1 - s] for s in range(half)]
        layouts.append(tuple(first + second))
    return tuple(layouts)


def _off_diagonal_norm(M: Tensor) -> Tensor:
    return (M - torch.diag_embed(M.diagonal(dim1=-2, dim2=-1))).square().sum((-2, -1)).sqrt()


def _rotate_round(M: Tensor, V: Tensor, half: int, negligible: Tensor) -> tuple[Tensor, Tensor]:
    """One round: rotate every pair (i, i + half) of the current layout at once.

    Pairs with |a_pq| <= ``negligible`` (B, 1) are left alone: together they leave an
    off-diagonal norm below tol/2, and rotating them would multiply ever smaller numbers
    into subnormal floats, which made the last sweeps about 10x slower on CPU.
    """
    diagonal = M.diagonal(dim1=-2, dim2=-1)
    app, aqq = diagonal[..., :half], diagonal[..., half:]
    apq = M[..., :half, half:].diagonal(dim1=-2, dim2=-1)
    zero = apq.abs() <= negligible
    tau = (aqq - app) / (2.0 * torch.where(zero, torch.ones_like(apq), apq))
    root = torch.hypot(torch.ones_like(tau), tau)
    t = torch.where(tau >= 0, 1.0, -1.0).to(M.dtype) / (tau.abs() + root)
    t = torch.where(zero, torch.zeros_like(t), t)
    c = torch.rsqrt(1.0 + t * t)
    s = t * c

    def rotate_columns(X: Tensor) -> Tensor:  # X J
        cc, ss = c.unsqueeze(-2), s.unsqueeze(-2)
        xp, xq = X[..., :half], X[..., half:]
        return torch.cat([cc * xp - ss * xq, ss * xp + cc * xq], dim=-1)

    # Jᵀ (M J) = (rows of M J rotated); M symmetric, so rotate columns twice via a transpose.
    M = rotate_columns(rotate_columns(M).transpose(-1, -2))
    return M, rotate_columns(V)


def jacobi_eigh(A: Tensor, tol: float | None = None, max_sweeps: int = 30) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of symmetric matrices by cyclic Jacobi rotations.

    Args:
        A: (B, N, N), (..., N, N) or (N, N) symmetric, float32 or float64.
        tol: stop when the off-diagonal Frobenius norm is <= tol x ||A||_F for every matrix;
            None means 4 x the dtype's machine epsilon.
        max_sweeps: cap on the number of sweeps (a RuntimeWarning reports non-convergence).

    Returns:
        eigenvalues (..., N) ascending and eigenvectors (..., N, N) in columns, each with
        its largest-magnitude entry positive (:func:`canonicalize_eigenvector_signs`).
        Computed under ``torch.no_grad()``: use :func:`cheeger.ops.eigh.eigh` for gradients.

    Cost: O(N³) per sweep, typically 6-10 sweeps in float64 for N <= 128.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> values, vectors = jacobi_eigh(A)
        >>> [round(v, 12) for v in values.tolist()]
        [1.0, 3.0]
        >>> [round(v, 12) for v in vectors[:, 0].tolist()]  # tie: the first entry is positive
        [0.707106781187, -0.707106781187]
    """
    check_symmetric_matrix(A, "A")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) or None; found {tol!r}")
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, Integral) or max_sweeps < 0:
        raise ValueError(f"max_sweeps must be an int >= 0; found {max_sweeps!r}")
    tol = 4.0 * torch.finfo(A.dtype).eps if tol is None else float(tol)

    batch, n = A.shape[:-2], A.shape[-1]
    with torch.no_grad():
        M = A.reshape(-1, n, n)
        M = 0.5 * (M + M.transpose(-1, -2))
        size = n + n % 2  # an odd size gets one decoupled zero row/column, never rotated
        if size != n:
            M = torch.nn.functional.pad(M, (0, 1, 0, 1))
        V = torch.eye(size, dtype=M.dtype, device=M.device).expand_as(M).clone()
        half = size // 2
        layouts = [torch.tensor(x, device=M.device) for x in _round_robin_layouts(size)]
        position = torch.arange(size, device=M.device)  # position[i]: where index i is stored
        scale = M.square().sum((-2, -1)).sqrt()
        # n entries of this size give an off-diagonal norm of tol * scale / 2: below tol.
        negligible = (0.5 * tol * scale / size).unsqueeze(-1)
        converged = bool((_off_diagonal_norm(M) <= tol * scale).all())
        sweeps = 0
        while not converged and sweeps < max_sweeps:
            for layout in layouts:
                gather = position[layout]
                M = M.index_select(-2, gather).index_select(-1, gather)
                V = V.index_select(-1, gather)
                position = torch.empty_like(layout)
                position[layout] = torch.arange(size, device=M.device)
                M, V = _rotate_round(M, V, half, negligible)
            M = 0.5 * (M + M.transpose(-1, -2))  # keep rounding from building an asymmetry
            sweeps += 1
            converged = bool((_off_diagonal_norm(M) <= tol * scale).all())
        if not converged:
            worst = float((_off_diagonal_norm(M) / scale.clamp_min(1e-300)).max())
            warnings.warn(
                f"jacobi_eigh did not converge in max_sweeps={max_sweeps} sweeps: "
                f"relative off-diagonal norm {worst:.3g} > tol {tol:.3g}",
                RuntimeWarning,
                stacklevel=2,
            )
        M = M.index_select(-2, position).index_select(-1, position)
        V = V.index_select(-1, position)
        eigenvalues = M.diagonal(dim1=-2, dim2=-1)[..., :n]
        eigenvectors = V[..., :n, :n]
        eigenvalues, order = eigenvalues.sort(dim=-1, stable=True)
        eigenvectors = eigenvectors.gather(-1, order.unsqueeze(-2).expand_as(eigenvectors))
        eigenvectors = canonicalize_eigenvector_signs(eigenvectors)
    return eigenvalues.reshape(*batch, n), eigenvectors.reshape(*batch, n, n)
