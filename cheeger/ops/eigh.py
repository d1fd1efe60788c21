"""Dense symmetric eigendecomposition with a choice of bounded backward.

Forward: ``torch.linalg.eigh`` on the full matrix, the k smallest (or largest) pairs
returned in a deterministic sign convention. Backward: the exact eigen-gradient formula
with the gap reciprocal replaced by one of the modes of
:mod:`cheeger.ops.backward_modes`, so that gradients stay finite at repeated eigenvalues
(a graph with several connected components has a repeated eigenvalue 0).

The backward formula. Let A = U Λ Uᵀ (Uᵀ U = I) and dA a symmetric perturbation. First-order
perturbation theory gives dλ_j = u_jᵀ dA u_j and du_j = Σ_{i≠j} u_i (u_iᵀ dA u_j)/(λ_j - λ_i).
With gλ = ∂L/∂λ and gU = ∂L/∂U (only the returned columns are nonzero), S = Uᵀ gU and
F_ij = 1/(λ_j - λ_i) (F_jj = 0),

    dL = Σ_j gλ_j dλ_j + tr(gUᵀ dU) = ⟨Uᵀ dA U, diag(gλ) + F ∘ S⟩ = ⟨dA, U (diag(gλ) + F ∘ S) Uᵀ⟩.

Because dA ranges over symmetric matrices only, the gradient is the symmetric part of
that matrix:

    gA = U (diag(gλ) + sym(F ∘ S)) Uᵀ,    sym(X) = (X + Xᵀ)/2.

For an antisymmetric F (every gap-only mode) sym(F ∘ S) = F ∘ (S - Sᵀ)/2, and ``exact``
reproduces ``torch.linalg.eigh``'s gradient (tested to 1e-8); ``power_iteration`` has a
non-antisymmetric F and needs the general form.

With k < N returned, gU has N - k zero columns, so only the N x k block of F ∘ S is
needed: gA = sym(U X U_kᵀ) with X = F ∘ (Uᵀ gU) + [diag(gλ); 0] (N x k). Every mode
except ``topk`` keeps all N rows (the complete gradient); ``topk`` keeps the k x k block,
gA = sym(U_k (diag(gλ) + F_k ∘ (U_kᵀ gU)) U_kᵀ).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cheeger.ops.backward_modes import (
    check_backward_mode,
    check_eps,
    coupling_matrix,
    resolve_order,
)
from cheeger.ops.checks import check_int

SIGN_CONVENTIONS: tuple[str | None, ...] = ("max_abs_positive", None)


def check_symmetric_matrix(A: Tensor, name: str = "A", symmetry_tol: float | None = None) -> None:
    """Raise unless ``A`` is a finite, real floating, square, symmetric (..., N, N) tensor.

    Args:
        A: the tensor to check.
        name: the argument name used in error messages.
        symmetry_tol: allowed max |A - Aᵀ| relative to max(max |A|, 1e-300); None means
            1000 x the dtype's machine epsilon (about 1.2e-4 for float32, 2.2e-13 for float64).
    """
    if not isinstance(A, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; found {type(A).__name__}")
    if A.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64; found {A.dtype}")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must have shape (..., N, N) (square); found {tuple(A.shape)}")
    if A.shape[-1] == 0:
        raise ValueError(f"{name} must have N >= 1; found shape {tuple(A.shape)}")
    A = A.detach()
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} must be finite; found {int((~torch.isfinite(A)).sum())} NaN/inf")
    tol = 1000.0 * torch.finfo(A.dtype).eps if symmetry_tol is None else float(symmetry_tol)
    scale = max(float(A.abs().amax()), 1e-300)
    asymmetry = float((A - A.transpose(-1, -2)).abs().amax())
    if asymmetry > tol * scale:
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}^T| = {asymmetry:.3g} exceeds "
            f"{tol:.3g} x max |{name}| = {tol * scale:.3g}"
        )


def canonicalize_eigenvector_signs(U: Tensor, rel_tol: float | None = None) -> Tensor:
    """Flip each column of U so that its largest-magnitude entry is positive.

    Entries within a relative ``rel_tol`` of the column's largest magnitude count as tied
    and the first (lowest row index) of them decides, so a constant vector and vectors whose
    extreme entries agree up to solver noise get a reproducible sign.

    Args:
        U: (..., N, k) eigenvectors in columns.
        rel_tol: tie tolerance; None means sqrt(machine epsilon) of U's dtype
            (3.5e-4 for float32, 1.5e-8 for float64).

    Returns:
        (..., N, k) U times a diagonal ±1 matrix.

    Example:
        >>> import torch
        >>> U = torch.tensor([[0.6, 0.5], [-0.8, -0.5]], dtype=torch.float64)
        >>> canonicalize_eigenvector_signs(U).tolist()
        [[-0.6, 0.5], [0.8, -0.5]]
    """
    tol = math.sqrt(torch.finfo(U.dtype).eps) if rel_tol is None else float(rel_tol)
    size = U.abs()
    near_max = size >= size.amax(-2, keepdim=True) * (1.0 - tol)
    pivot_row = near_max.to(torch.uint8).argmax(-2, keepdim=True)  # first True
    pivot = U.gather(-2, pivot_row)
    return U * torch.where(pivot < 0, -1.0, 1.0).to(U.dtype)


def _eigh_vjp(
    eigenvalues: Tensor,
    eigenvectors: Tensor,
    grad_eigenvalues: Tensor,
    grad_eigenvectors: Tensor,
    k: int,
    mode: str,
    largest: bool,
    eps: float,
    order: int | None,
) -> Tensor:
    """gA = sym(U_rows X U_kᵀ) (module docstring); eigen* in return order, (B, N[, N])."""
    coupling = coupling_matrix(eigenvalues, k, mode, largest, eps, order)  # (B, R, k)
    rows = eigenvectors[..., : coupling.shape[-2]]
    returned = eigenvectors[..., :k]
    inner = coupling * (rows.transpose(-1, -2) @ grad_eigenvectors)
    inner[..., :k, :] += torch.diag_embed(grad_eigenvalues)
    grad = rows @ inner @ returned.transpose(-1, -2)
    return 0.5 * (grad + grad.transpose(-1, -2))


class _Eigh(torch.autograd.Function):
    """Forward by torch.linalg.eigh, backward by :func:`_eigh_vjp`; batched (B, N, N)."""

    @staticmethod
    def forward(ctx, A, k, largest, mode, eps, order, sign):
        eigenvalues, eigenvectors = torch.linalg.eigh(A)
        if largest:
            eigenvalues, eigenvectors = eigenvalues.flip(-1), eigenvectors.flip(-1)
        if sign is not None:
            eigenvectors = torch.cat(
                [canonicalize_eigenvector_signs(eigenvectors[..., :k]), eigenvectors[..., k:]],
                dim=-1,
            )
        ctx.save_for_backward(eigenvalues, eigenvectors)
        ctx.options = (k, mode, largest, eps, order)
        return eigenvalues[..., :k].clone(), eigenvectors[..., :k].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_eigenvalues, grad_eigenvectors):
        eigenvalues, eigenvectors = ctx.saved_tensors
        k, mode, largest, eps, order = ctx.options
        grad = _eigh_vjp(
            eigenvalues,
            eigenvectors,
            grad_eigenvalues,
            grad_eigenvectors,
            k,
            mode,
            largest,
            eps,
            order,
        )
        return grad, None, None, None, None, None, None


def eigh(
    A: Tensor,
    k: int | None = None,
    largest: bool = False,
    backward: str = "lorentzian",
    eps: float = 1e-4,
    order: int | None = None,
    sign: str | None = "max_abs_positive",
    symmetry_tol: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The k smallest (or largest) eigenpairs of symmetric matrices, with a bounded backward.

    Args:
        A: (B, N, N), (..., N, N) or (N, N) symmetric, float32 or float64.
        k: number of eigenpairs, 1 <= k <= N; None means N.
        largest: return the k largest instead of the k smallest.
        backward: gap-reciprocal mode of the eigenvector gradient, one of
            :data:`cheeger.ops.backward_modes.BACKWARD_MODES`: ``exact``, ``lorentzian``,
            ``clamp``, ``taylor``, ``pade``, ``power_iteration``, ``topk`` (definitions,
            accuracy and bounds in :mod:`cheeger.ops.backward_modes`). ``exact`` is the
            formula of ``torch.linalg.eigh``'s backward and, like it, gives ±inf/NaN or
            huge values (1/rounding noise) at repeated eigenvalues. Eigenvalue gradients
            are exact in every mode. Every mode except ``topk`` couples the returned
            eigenvectors to all N eigenvectors, also when k < N.
        eps: ε >= 0, the regularisation scale in eigenvalue units.
        order: series degree (taylor), Gauss nodes (pade), power-iteration steps
            (power_iteration); None uses the mode's default.
        sign: ``"max_abs_positive"`` flips each returned eigenvector so that its largest-
            magnitude entry is positive (ties: the first such entry, see
            :func:`canonicalize_eigenvector_signs`); None keeps LAPACK's signs.
        symmetry_tol: see :func:`check_symmetric_matrix`.

    Returns:
        eigenvalues (..., k) and eigenvectors (..., N, k) (unbatched input: (k,), (N, k)),
        ordered from the requested end: ascending for the smallest, descending for the
        largest, so index 0 is always the most extreme pair.

    Raises:
        ValueError: ``A`` not square, symmetric, finite or float; ``k`` outside [1, N];
            unknown ``backward`` or ``sign``; ``eps`` < 0; ``order`` < 1.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
        >>> values, vectors = eigh(A, k=1, largest=True)
        >>> [round(v, 4) for v in values.tolist()], vectors.shape
        ([3.4142], torch.Size([3, 1]))
    """
    check_symmetric_matrix(A, "A", symmetry_tol)
    n = A.shape[-1]
    if k is None:
        k = n
    k = check_int("k", k, 1, n, "N")
    if not isinstance(largest, bool):
        raise ValueError(f"largest must be a bool; found {largest!r}")
    mode = check_backward_mode(backward)
    eps = check_eps(eps)
    order = resolve_order(mode, order)
    if sign not in SIGN_CONVENTIONS:
        raise ValueError(f"sign must be one of {SIGN_CONVENTIONS}; found {sign!r}")

    batch = A.shape[:-2]
    values, vectors = _Eigh.apply(A.reshape(-1, n, n), int(k), largest, mode, eps, order, sign)
    return values.reshape(*batch, k), vectors.reshape(*batch, n, k)
