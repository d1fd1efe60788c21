"""Bounded replacements for the eigengap reciprocal in eigenvector gradients.

Every backward of a symmetric eigendecomposition A = U diag(λ) Uᵀ contains the
coupling matrix F with F_ij = 1/(λ_j - λ_i) for i ≠ j (see :func:`cheeger.ops.eigh.eigh`
for the full formula). It is unbounded where two eigenvalues meet, which happens
whenever a graph has several connected components. This module holds the choices of F,
one family of names shared by the dense :func:`~cheeger.ops.eigh.eigh` and by partial
(subspace) solvers, which reuse :func:`gap_reciprocal` for their in-subspace part.

Modes of :func:`gap_reciprocal` (a function of the gap Δ = λ_j - λ_i alone, so every
mode is, like the exact gradient, unchanged when A is shifted by a multiple of I). All
approximate modes are odd in Δ, keep the sign of 1/Δ and under-estimate its size, so
their relative error ``1 - Δ·F(Δ)`` lies in [0, 1]; :func:`gap_reciprocal_relative_error`
gives it in closed form and :func:`gap_reciprocal_sup` the bound on ``|F|``.

==============  ==================================  =============================  =============
mode            F(Δ)                                relative error                 sup |F|
==============  ==================================  =============================  =============
``exact``       1/Δ                                 0                              ∞ (IEEE at 0)
``lorentzian``  Δ/(Δ² + ε²)                         ε²/(Δ² + ε²) ≤ (ε/Δ)²          1/(2ε)
``clamp``       sign(Δ)/max(|Δ|, ε), sign(0) = 0    max(0, 1 - |Δ|/ε)              1/ε
``taylor``      sign(Δ) (1/(ε+|Δ|)) Σ_{n=0}^{K} rⁿ  r^(K+1)                        (K+1)/ε
``pade``        sign(Δ) (1/(ε+|Δ|)) R_n(r)²         4q^(2n)/(1+q^(2n))² ≤ 4q^(2n)  4n²/ε
==============  ==================================  =============================  =============

with r = ε/(ε + |Δ|) ∈ (0, 1] and q = (1 - √(1-r))/(1 + √(1-r)) ≤ r (q ≈ r/4 for small r).

``taylor`` (Wang et al., "Robust Differentiable SVD", TPAMI 2021). For positive numbers
μ_big > μ_small, 1/(μ_big - μ_small) = (1/μ_big) Σ_n (μ_small/μ_big)ⁿ; truncating at degree
K = ``order`` bounds it by (K+1)/μ_big even when the two are equal. Wang et al. apply this
to the eigenvalues of a covariance matrix as they are. For any symmetric input we shift
*each pair* so that its smaller eigenvalue sits at ε: μ_small = ε, μ_big = ε + |Δ|, ratio
r = ε/(ε + |Δ|). A single global shift (λ - λ_min + ε) would make the accuracy depend on
where in the spectrum a pair sits (a gap Δ at height h above λ_min needs K ≈ h/Δ terms);
the per-pair shift makes F a function of Δ only and ε the one scale, as in the other modes.
Equal eigenvalues give F = 0 (sign(0) = 0); as |Δ| → 0⁺ the value tends to (K+1)/ε.

``pade`` (in the spirit of Song et al., "Why Approximate Matrix Square Root Outperforms
Accurate SVD in Global Covariance Pooling?", ICCV 2021). The [m/n] Padé approximant of the
geometric series 1/(1-r) itself is useless here: 1/(1-r) is already rational of type
[0/1], so for every n ≥ 1 its Padé approximant *is* 1/(1-r), pole included. Instead we
write 1/(1-r) = s(r)² with s(r) = (1-r)^(-1/2), a Stieltjes function,
s(r) = ∫₀¹ dμ(t)/(1 - r t) with the arcsine density dμ = dt/(π√(t(1-t))). Its [n-1/n]
Padé approximant is the n-point Gauss quadrature of that integral,
R_n(r) = (1/n) Σ_k 1/(1 - r t_k), t_k = (1 + cos((2k-1)π/(2n)))/2, whose poles 1/t_k lie
in (1, ∞): R_n is finite on [0, 1] with R_n(1) = 2n. So F uses R_n(r)², a rational
function of type [2n-2/2n] in the same variable r that matches 1/(1-r) through r^(2n-1)
(as ``taylor`` with K = 2n-1 does) but with an error smaller by about 4^(1-2n), at the
price of a larger bound at Δ = 0 (4n²/ε against 2n/ε). ``order`` is n.

Two further backward modes are not functions of Δ alone and are assembled by
:func:`coupling_matrix`:

* ``topk``: the "truncated" gradient of published partial-eigensolver code: only the
  returned k eigenpairs interact (F is k x k, with the Lorentzian reciprocal above; ε = 0
  gives the exact in-subspace reciprocal); the component of each eigenvector gradient
  outside the returned subspace, (I - U_k U_kᵀ) ∂L/∂U_k, is dropped. Exact when k = N.
* ``power_iteration`` (Wang et al., "Backpropagation-Friendly Eigendecomposition",
  NeurIPS 2019): the exact derivative of K = ``order`` steps of deflated power iteration
  started from the eigenvectors themselves; see :func:`power_iteration_coupling`.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor

from cheeger.ops.checks import check_number

GAP_MODES: tuple[str, ...] = ("exact", "lorentzian", "clamp", "taylor", "pade")
"""Modes whose coupling is a function of the gap alone (usable by any solver)."""

BACKWARD_MODES: tuple[str, ...] = (*GAP_MODES, "power_iteration", "topk")
"""Every backward mode of :func:`cheeger.ops.eigh.eigh`."""

DEFAULT_ORDER: dict[str, int] = {"taylor": 3, "pade": 2, "power_iteration": 20}
"""``order`` used when None is passed: series degree K, Gauss nodes n, iteration steps K."""

# The in-subspace reciprocal of ``topk``.
_TOPK_INNER = "lorentzian"


def check_backward_mode(
    mode: str, allowed: tuple[str, ...] = BACKWARD_MODES, name: str = "backward"
) -> str:
    """Return ``mode`` if it is one of ``allowed``, else raise a ValueError naming
    ``name`` and listing them."""
    if not isinstance(mode, str) or mode not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; found {mode!r}")
    return mode


def check_eps(eps: float, name: str = "eps") -> float:
    """Return ``eps`` as a float if it is finite and >= 0, else raise a ValueError."""
    return check_number(name, eps, 0)


def resolve_order(mode: str, order: int | None) -> int | None:
    """The ``order`` a mode uses: ``order`` itself (an int >= 1) or the mode's default.

    Modes without an order (``exact``, ``lorentzian``, ``clamp``, ``topk``) return None and
    accept any valid ``order``, so that one configuration can switch modes freely.
    """
    if order is not None and (isinstance(order, bool) or not isinstance(order, Integral)):
        raise ValueError(f"order must be an int >= 1 or None; found {order!r}")
    if order is not None and order < 1:
        raise ValueError(f"order must be an int >= 1 or None; found {order}")
    if mode not in DEFAULT_ORDER:
        return None
    return int(order) if order is not None else DEFAULT_ORDER[mode]


def _gauss_arcsine_nodes(n: int, like: Tensor) -> Tensor:
    """Nodes t_k of the n-point Gauss rule for dt/(π√(t(1-t))) on [0, 1] (weights 1/n)."""
    k = torch.arange(1, n + 1, dtype=like.dtype, device=like.device)
    return 0.5 * (1.0 + torch.cos((2.0 * k - 1.0) * math.pi / (2.0 * n)))


def gap_reciprocal(
    delta: Tensor, mode: str = "lorentzian", eps: float = 1e-4, order: int | None = None
) -> Tensor:
    """Bounded approximation F(Δ) of 1/Δ, elementwise, for any shape.

    Args:
        delta: (...) gaps Δ = λ_j - λ_i, float32 or float64.
        mode: one of :data:`GAP_MODES` (table in the module docstring), or ``topk``, which
            maps to its in-subspace reciprocal (``lorentzian``).
        eps: ε >= 0, in eigenvalue units. ε = 0 makes every mode exact (and unbounded).
        order: K for ``taylor`` (series degree), n for ``pade`` (Gauss nodes); None uses
            :data:`DEFAULT_ORDER`.

    Returns:
        (...) F(Δ), same dtype and device as ``delta``. ``exact`` returns IEEE 1/Δ
        (±inf at Δ = ±0); the approximate modes return 0 at Δ = 0 (ε > 0).

    Example:
        >>> import torch
        >>> d = torch.tensor([0.0, 1e-3, -1e-3, 1.0], dtype=torch.float64)
        >>> [round(f, 6) for f in gap_reciprocal(d, "lorentzian", eps=1e-3).tolist()]
        [0.0, 500.0, -500.0, 0.999999]
        >>> [round(f, 6) for f in gap_reciprocal(d, "clamp", eps=1e-3).tolist()]
        [0.0, 1000.0, -1000.0, 1.0]
    """
    if mode == "power_iteration":
        raise ValueError(
            "backward 'power_iteration' is not a function of the gap alone; "
            "use power_iteration_coupling (or coupling_matrix)"
        )
    mode = check_backward_mode(mode)
    if mode == "topk":
        mode = _TOPK_INNER
    eps = check_eps(eps)
    order = resolve_order(mode, order)

    if mode == "exact":
        return torch.reciprocal(delta)
    if mode == "lorentzian":
        return delta / (delta * delta + eps * eps)
    size = delta.abs()
    if mode == "clamp":
        return torch.sign(delta) / size.clamp_min(eps)
    # taylor and pade: the pair shifted so that its smaller member sits at ε.
    big = size + eps
    r = eps / big
    if mode == "taylor":
        series = torch.ones_like(r)
        for _ in range(order):  # Horner: 1 + r(1 + r(1 + ...)), degree K
            series = 1.0 + r * series
        return torch.sign(delta) * series / big
    nodes = _gauss_arcsine_nodes(order, delta)
    root = torch.reciprocal(1.0 - r.unsqueeze(-1) * nodes).mean(-1)  # R_n(r) ≈ (1-r)^(-1/2)
    return torch.sign(delta) * root * root / big


def gap_reciprocal_relative_error(
    delta: Tensor, mode: str = "lorentzian", eps: float = 1e-4, order: int | None = None
) -> Tensor:
    """Closed-form relative error 1 - Δ·F(Δ) of :func:`gap_reciprocal`, in [0, 1].

    Derived independently of the implementation (formulas in the module docstring), so
    tests can hold one against the other. For a gradient, |F_ij - 1/Δ_ij| ≤ e_ij |1/Δ_ij|
    pairwise implies ||gA_mode - gA_exact||_F ≤ max_ij e_ij · ||F_exact ∘ (Uᵀ ∂L/∂U)||_F.

    Args:
        delta: (...) gaps; mode, eps, order as in :func:`gap_reciprocal`.

    Returns:
        (...) relative error e(Δ) (1 where Δ = 0 and ε > 0, 0 for ``exact``).
    """
    if mode == "power_iteration":
        raise ValueError("backward 'power_iteration' has no gap-only error formula")
    mode = check_backward_mode(mode)
    if mode == "topk":
        mode = _TOPK_INNER
    eps = check_eps(eps)
    order = resolve_order(mode, order)
    size = delta.abs()
    if mode == "exact":
        return torch.zeros_like(delta)
    if mode == "lorentzian":
        return eps * eps / (size * size + eps * eps)
    if mode == "clamp":
        return (1.0 - size / eps).clamp_min(0.0) if eps > 0 else torch.zeros_like(delta)
    r = eps / (size + eps)
    if mode == "taylor":
        return r ** (order + 1)
    root = torch.sqrt(1.0 - r)
    q2n = ((1.0 - root) / (1.0 + root)) ** (2 * order)
    return 4.0 * q2n / (1.0 + q2n) ** 2


def gap_reciprocal_sup(mode: str, eps: float, order: int | None = None) -> float:
    """Bound on |F| over all gaps (power_iteration: over all spectra), in 1/eigenvalue units.

    ``exact`` and ε = 0 give ``inf``. For ``power_iteration`` the bound K/ε is reached only
    when a returned eigenvalue lies at the far end of the spectrum; in general
    |F_ij| ≤ K/μ_j with μ_j the shifted eigenvalue (see :func:`power_iteration_coupling`).
    """
    mode = check_backward_mode(mode)
    eps = check_eps(eps)
    order = resolve_order(mode, order)
    if mode == "exact" or eps == 0:
        return math.inf
    if mode in ("lorentzian", "topk"):
        return 0.5 / eps
    if mode == "clamp":
        return 1.0 / eps
    if mode == "taylor":
        return (order + 1) / eps
    if mode == "pade":
        return 4.0 * order * order / eps
    return order / eps  # power_iteration


def power_iteration_coupling(
    eigenvalues: Tensor, k: int, largest: bool = False, eps: float = 1e-4, order: int = 20
) -> Tensor:
    """Coupling F of the derivative of deflated power iteration, in closed form.

    What it computes. The k returned eigenvectors are taken to be the output of this
    procedure, run on M = σ(A - λ_far I) + εI (σ = -1, λ_far = λ_max when the smallest are
    wanted; σ = +1, λ_far = λ_min for the largest), whose eigenvalues μ = σ(λ - λ_far) + ε
    are >= ε and largest at the wanted end: for j = 1..k in order,
    M_j = M - Σ_{m<j} ρ_m v_m v_mᵀ (ρ_m = v_mᵀ M v_m), v ← u_j (the eigh result, held
    constant), then K times v ← M_j v / ||M_j v||. At the exact eigenvectors v_j = u_j, and
    the derivative of this map is dv_j = Σ_{i≠j} u_i F_ij (u_iᵀ dA u_j) with, writing
    ρ = min(μ_i, μ_j)/max(μ_i, μ_j) ∈ (0, 1]:

    * i after j (a later returned vector or one not returned):
      F_ij = σ (1/μ_j) Σ_{n=0}^{K-1} ρⁿ = (1 - ρ^K)/(λ_j - λ_i);
    * i before j (deflated out of M_j; enters through the derivative of the deflation):
      F_ij = -σ (1/μ_j) Σ_{n=1}^{K-1} ρⁿ = (1 - ρ^(K-1))/(λ_j - λ_i).

    Relative error against the exact 1/(λ_j - λ_i): ρ^K resp. ρ^(K-1), i.e. converged
    power iteration; with μ measured from the far end, ρ is close to 1 for pairs near the
    wanted end unless the spectrum is spread thinly, so K must be ≫ μ_j/(μ_j - μ_i).
    Bounded: |F_ij| ≤ K/μ_j ≤ K/ε, also at equal eigenvalues. Not antisymmetric:
    F_ij + F_ji = σρ^(K-1)/μ_i for i before j, so inside a degenerate block of returned
    vectors the gradient of a rotation-invariant loss (e.g. a projector) is off by up to
    ||block of Uᵀ∂L/∂U||_F/(2 μ): a property of power iteration, not of this formula
    (the tests check it against autograd through an unrolled power iteration).

    Args:
        eigenvalues: (..., N) in return order: the k returned first, sorted from the
            wanted end (ascending for smallest, descending for largest), then the rest.
        k: number of returned eigenvectors (columns of F).
        largest: whether the largest (True) or smallest eigenvalues were returned.
        eps: ε > 0, the shift margin (ε = 0 is allowed but unbounded when k = N).
        order: K >= 1, the number of power-iteration steps.

    Returns:
        (..., N, k) F with zero diagonal (F_jj = 0).
    """
    eps = check_eps(eps)
    order = resolve_order("power_iteration", order)
    sigma = 1.0 if largest else -1.0
    far = eigenvalues.amin(-1, keepdim=True) if largest else eigenvalues.amax(-1, keepdim=True)
    mu = sigma * (eigenvalues - far) + eps
    mu_i = mu.unsqueeze(-1)  # (..., N, 1) rows
    mu_j = mu[..., None, :k]  # (..., 1, k) columns
    ratio = torch.minimum(mu_i, mu_j) / torch.maximum(mu_i, mu_j)
    series = torch.ones_like(ratio)  # Σ_{n=0}^{K-1} ρⁿ by Horner
    for _ in range(order - 1):
        series = 1.0 + ratio * series
    n = eigenvalues.shape[-1]
    row = torch.arange(n, device=eigenvalues.device).unsqueeze(-1)
    col = torch.arange(k, device=eigenvalues.device).unsqueeze(0)
    later = sigma * series / mu_j
    earlier = -sigma * (series - 1.0) / mu_j
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    return torch.where(row > col, later, torch.where(row < col, earlier, zero))


def coupling_matrix(
    eigenvalues: Tensor,
    k: int,
    mode: str = "lorentzian",
    largest: bool = False,
    eps: float = 1e-4,
    order: int | None = None,
) -> Tensor:
    """The matrix F of the eigenvector backward for any backward mode.

    Args:
        eigenvalues: (..., N) in return order (the k returned first, from the wanted end).
        k: number of returned eigenpairs.
        mode: one of :data:`BACKWARD_MODES`.
        largest: which end was returned (used by ``power_iteration`` only).
        eps, order: as in :func:`gap_reciprocal`.

    Returns:
        (..., N, k), F_ij ≈ 1/(λ_j - λ_i) and F_jj = 0; for ``topk`` only the (..., k, k)
        block (the coupling to the N - k other eigenvectors is dropped).
    """
    mode = check_backward_mode(mode)
    if mode == "power_iteration":
        return power_iteration_coupling(eigenvalues, k, largest, eps, resolve_order(mode, order))
    rows = eigenvalues[..., :k] if mode == "topk" else eigenvalues
    delta = eigenvalues[..., None, :k] - rows.unsqueeze(-1)
    coupling = gap_reciprocal(delta, mode, eps, order)
    diagonal = torch.eye(rows.shape[-1], k, dtype=torch.bool, device=eigenvalues.device)
    return coupling.masked_fill(diagonal, 0.0)
