"""Spectral filters h(L) X, exactly through eigenvectors or approximately through Chebyshev sums.

A spectral filter is a scalar response h(λ) applied to the eigenvalues of a graph
Laplacian L = U Λ Uᵀ:

    h(L) X = U h(Λ) Uᵀ X.

In a subspace (:func:`subspace_filter`): needs eigenvectors (a partial or dense solver, or a
Nyström basis), and restricts the filter to their span.

Chebyshev (:func:`chebyshev_filter`, Hammond et al. 2011; Defferrard et al. 2016): with
the spectrum in [0, λmax], map it onto [-1, 1] by L~ = 2 L / λmax - I and use the
polynomial

    h(L) X ≈ Σ_{k=0}^{K-1} θ_k T_k(L~) X,
    T_0(L~) X = X,  T_1(L~) X = L~ X,  T_{k+1}(L~) X = 2 L~ T_k(L~) X - T_{k-1}(L~) X,

which costs K - 1 sparse products and no eigensolver. :func:`chebyshev_coefficients`
fits θ to a given h on [0, λmax] by interpolation at Chebyshev nodes, and
:func:`chebyshev_response` evaluates the polynomial at given eigenvalues, so a learned θ
can be plotted or compared with the h it should represent.

Coefficient layouts. ``theta`` is one of

* (K,):       one response shared by all channels and batch elements;
* (K, C):     one response per channel (C = 1 broadcasts);
* (B, K, C):  one response per batch element and channel (C = 1 broadcasts; a per-image
              scalar response is (B, K, 1)).

The order axis is always the one before the channel axis. A two-axis (B, K) layout is
deliberately not accepted: it could not be told apart from (K, C) by shape alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cheeger.ops.graph import NeighborGraph, adjacency_matvec, degree
from cheeger.ops.laplacian import (
    LaplacianKind,
    inverse_degree_power,
    lambda_max_bound,
    laplacian_kind,
    normalized_adjacency,
)

Response = Callable[[Tensor], Tensor]
"""h(λ): elementwise on a tensor of eigenvalues of any shape S; returns S or S + (C,)."""


# --------------------------------------------------------------------------- validation


def _check_lambda_max(lambda_max: Tensor | float, batch: int | None, like: Tensor) -> Tensor:
    """lambda_max as a tensor of shape () or (B,) with the dtype and device of ``like``."""
    if isinstance(lambda_max, bool) or not isinstance(lambda_max, (Tensor, int, float)):
        raise ValueError(
            f"lambda_max must be a number or a tensor, found {type(lambda_max).__name__}"
        )
    if isinstance(lambda_max, Tensor):
        value = lambda_max.to(dtype=like.dtype, device=like.device)
    else:  # not through torch.as_tensor, which would round a Python float to float32
        value = torch.tensor(float(lambda_max), dtype=like.dtype, device=like.device)
    if value.dim() > 1 or (value.dim() == 1 and batch is not None and value.shape[0] != batch):
        raise ValueError(
            f"lambda_max must be a scalar or a vector of length B = {batch}, "
            f"found shape {tuple(value.shape)}"
        )
    detached = value.detach()
    if not bool(torch.isfinite(detached).all()) or bool((detached <= 0).any()):
        raise ValueError(f"lambda_max must be finite and > 0, found {detached.tolist()}")
    return value


def _check_theta(theta: Tensor, batch: int | None, channels: int | None) -> Tensor:
    """theta as (Bt, K, Ct) with Bt in {1, B} and Ct in {1, C}; see the module docstring."""
    if not isinstance(theta, Tensor) or not theta.is_floating_point():
        found = theta.dtype if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a floating-point tensor, found {found}")
    if theta.dim() not in (1, 2, 3):
        raise ValueError(f"theta must be (K,), (K, C) or (B, K, C), found {tuple(theta.shape)}")
    if theta.shape[-1 if theta.dim() == 1 else -2] == 0:
        raise ValueError(
            f"theta must hold at least one coefficient (K >= 1), found shape {tuple(theta.shape)}"
        )
    if theta.dim() >= 2 and channels is not None and theta.shape[-1] not in (1, channels):
        raise ValueError(
            f"theta's channel axis (last) must be 1 or C = {channels}, "
            f"found shape {tuple(theta.shape)}"
        )
    if theta.dim() == 3 and batch is not None and theta.shape[0] != batch:
        raise ValueError(
            f"theta's batch axis (first) must be B = {batch}, found shape {tuple(theta.shape)}"
        )
    if not bool(torch.isfinite(theta.detach()).all()):
        raise ValueError("theta must be finite, found NaN or Inf entries")
    if theta.dim() == 1:
        return theta.view(1, -1, 1)
    if theta.dim() == 2:
        return theta.unsqueeze(0)
    return theta


def _check_signal(x: Tensor, graph: NeighborGraph) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"x must be (B, N, C) = ({graph.batch_size}, {graph.num_nodes}, C), found {found}"
        )
    if x.shape[:2] != (graph.batch_size, graph.num_nodes):
        raise ValueError(
            f"x must be (B, N, C) = ({graph.batch_size}, {graph.num_nodes}, C), "
            f"found {tuple(x.shape)}"
        )
    if x.dtype != graph.weight.dtype:
        raise ValueError(
            f"x must have the dtype of graph.weight {graph.weight.dtype}, found {x.dtype}"
        )


def _check_order(order: int, name: str = "order") -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"{name} must be an int >= 1, found {order!r}")


# --------------------------------------------------------------------------- Chebyshev


def _rescaled_laplacian(
    graph: NeighborGraph, kind: LaplacianKind, lambda_max: Tensor, eps: float | None
) -> Callable[[Tensor], Tensor]:
    """X -> L~ X = (2 / λmax) L X - X, written as c ⊙ X - r ⊙ (A X) with one sparse A.

    symmetric:    A = D^-1/2 W D^-1/2 (built once), c = a - 1,   r = a
    unnormalized: A = W,                            c = a d - 1, r = a
    random_walk:  A = W,                            c = a - 1,   r = a / d (0 if isolated)
    with a = 2 / λmax per batch element.
    """
    scale = (2.0 / lambda_max).reshape(-1, 1, 1)  # () or (B,) -> (1 or B, 1, 1)
    if kind is LaplacianKind.SYMMETRIC:
        operator = normalized_adjacency(graph, eps)
        diagonal, row_scale = scale - 1.0, scale
    elif kind is LaplacianKind.UNNORMALIZED:
        operator = graph
        diagonal, row_scale = scale * degree(graph).unsqueeze(-1) - 1.0, scale
    else:
        operator = graph
        inverse = inverse_degree_power(graph, 1.0, eps).unsqueeze(-1)
        diagonal, row_scale = scale - 1.0, scale * inverse

    def apply(x: Tensor) -> Tensor:
        return torch.addcmul(diagonal * x, row_scale, adjacency_matvec(operator, x), value=-1.0)

    return apply


def chebyshev_filter(
    graph: NeighborGraph,
    x: Tensor,
    theta: Tensor,
    kind: LaplacianKind | str = "symmetric",
    lambda_max: Tensor | float | None = None,
    eps: float | None = None,
) -> Tensor:
    """Σ_k θ_k T_k(2 L / λmax - I) X by the three-term recurrence (no eigensolver).

    Args:
        graph: symmetric NeighborGraph (B, N, K').
        x: (B, N, C), dtype of ``graph.weight``.
        theta: (K,), (K, C) or (B, K, C) coefficients (module docstring), K >= 1;
            cast to the dtype of ``x``.
        kind: Laplacian, "symmetric", "unnormalized" or "random_walk".
        lambda_max: upper end of the interval mapped onto [-1, 1]: a positive number or
            (B,) tensor; None uses ``lambda_max_bound(graph, kind)`` (2 for the normalised
            kinds, 2 max d for the unnormalised one). Eigenvalues above it fall outside
            [-1, 1], where T_k grows like (x + sqrt(x² - 1))^k.
        eps: isolated-node threshold of the degree normalisation (see ``cheeger.ops.laplacian``).

    Returns:
        (B, N, C). Costs K - 1 sparse products of width C; differentiable by plain
        autograd in ``x``, ``theta``, ``graph.weight`` and a tensor ``lambda_max`` (the
        default bound of the unnormalised kind depends on the weights through max d).
        Autograd keeps the K blocks T_k X: memory O(K B N C).

    Example:
        >>> import torch
        >>> from cheeger.ops.graph import symmetrize
        >>> index = torch.tensor([[[1], [0]]])  # one edge 0 - 1
        >>> graph = symmetrize(index, torch.ones(1, 2, 1, dtype=torch.float64))
        >>> x = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
        >>> theta = torch.tensor([1.0, 1.0], dtype=torch.float64)  # 1 + (L - I) = L
        >>> chebyshev_filter(graph, x, theta).flatten().tolist()
        [1.0, -1.0]
    """
    kind = laplacian_kind(kind)
    _check_signal(x, graph)
    coefficients = _check_theta(theta, graph.batch_size, x.shape[-1]).to(x.dtype)
    if lambda_max is None:
        lambda_max = lambda_max_bound(graph, kind)
    lambda_max = _check_lambda_max(lambda_max, graph.batch_size, x)
    rescaled = _rescaled_laplacian(graph, kind, lambda_max, eps)
    order = coefficients.shape[1]

    def term(k: int) -> Tensor:
        return coefficients[:, k].unsqueeze(1)  # (Bt, 1, Ct) broadcasts over (B, N, C)

    previous = x
    out = term(0) * x
    if order == 1:
        return out
    current = rescaled(x)
    out = out + term(1) * current
    for k in range(2, order):
        previous, current = current, 2.0 * rescaled(current) - previous
        out = out + term(k) * current
    return out


def chebyshev_response(theta: Tensor, eigenvalues: Tensor, lambda_max: Tensor | float) -> Tensor:
    """The polynomial p(λ) = Σ_k θ_k T_k(2 λ / λmax - 1) evaluated at given eigenvalues.

    Args:
        theta: (K,), (K, C) or (B, K, C).
        eigenvalues: any shape S for theta (K,) or (K, C); (B, M) for theta (B, K, C).
        lambda_max: positive number, or (B,) with eigenvalues of shape (B, M).

    Returns:
        S for theta (K,); S + (C,) for theta (K, C); (B, M, C) for theta (B, K, C).
        Differentiable in all three arguments.
    """
    if not isinstance(eigenvalues, Tensor) or not eigenvalues.is_floating_point():
        found = eigenvalues.dtype if isinstance(eigenvalues, Tensor) else type(eigenvalues)
        raise ValueError(f"eigenvalues must be a floating-point tensor, found {found}")
    per_batch = isinstance(theta, Tensor) and theta.dim() == 3
    if per_batch and eigenvalues.dim() != 2:
        raise ValueError(
            f"eigenvalues must be (B, M) for theta (B, K, C), found {tuple(eigenvalues.shape)}"
        )
    batch = eigenvalues.shape[0] if eigenvalues.dim() >= 1 else None
    _check_theta(theta, batch if per_batch else None, None)
    theta = theta.to(eigenvalues.dtype)
    lambda_max = _check_lambda_max(lambda_max, batch, eigenvalues)
    if lambda_max.dim() == 1:
        if eigenvalues.dim() != 2:
            raise ValueError(
                f"eigenvalues must be (B, M) when lambda_max is (B,), "
                f"found {tuple(eigenvalues.shape)}"
            )
        lambda_max = lambda_max.unsqueeze(-1)
    mapped = 2.0 * eigenvalues / lambda_max - 1.0
    order = theta.shape[-1 if theta.dim() == 1 else -2]
    polys = [torch.ones_like(mapped), mapped]
    for _ in range(2, order):
        polys.append(2.0 * mapped * polys[-1] - polys[-2])
    basis = torch.stack(polys[:order], dim=-1)  # S + (K,)
    return basis @ theta  # (K,): S;  (K, C): S + (C,);  (B, K, C): (B, M, C)


def chebyshev_nodes(num_points: int, lambda_max: Tensor | float = 2.0) -> Tensor:
    """Chebyshev nodes of the first kind on [0, λmax], (M,) or (B, M), decreasing in λ.

    λ_j = λmax (1 + cos(π (j + 1/2) / M)) / 2,  j = 0, ..., M - 1 (float64 unless
    ``lambda_max`` is a floating tensor).
    """
    _check_order(num_points, "num_points")
    like = lambda_max if isinstance(lambda_max, Tensor) and lambda_max.is_floating_point() else None
    like = like if like is not None else torch.zeros((), dtype=torch.float64)
    lambda_max = _check_lambda_max(lambda_max, None, like)
    angles = _node_angles(num_points, like)
    return 0.5 * lambda_max.unsqueeze(-1) * (1.0 + torch.cos(angles))


def _node_angles(num_points: int, like: Tensor) -> Tensor:
    steps = torch.arange(num_points, dtype=like.dtype, device=like.device)
    return math.pi * (steps + 0.5) / num_points


def chebyshev_coefficients(
    h: Response,
    order: int,
    lambda_max: Tensor | float,
    num_points: int | None = None,
) -> Tensor:
    """Coefficients θ of a Chebyshev approximation of degree order - 1 of h on [0, λmax].

    With M = ``num_points`` nodes x_j = cos(π (j + 1/2) / M) on [-1, 1] (λ_j = λmax (x_j + 1) / 2),

        θ_k = (2 - [k = 0]) / M · Σ_j h(λ_j) cos(π k (j + 1/2) / M),   k = 0, ..., order - 1,

    a discrete cosine transform of the samples. For M = order this is the interpolant:
    the polynomial equals h at the M nodes, is exact for polynomials of degree < order and
    within 2 Σ_{k >= order} |c_k| of h on the interval (c_k the Chebyshev series
    coefficients of h). For M > order it is the interpolant of degree M - 1 truncated to
    ``order`` terms, which approaches the truncated Chebyshev series (error within about
    Σ_{k >= order} |c_k|) as M grows; smooth responses (heat kernels) converge
    geometrically either way.

    Args:
        h: the response, elementwise on a tensor of eigenvalues of shape S, returning S
            (one response) or S + (C,) (one per channel); called once on all nodes.
            Differentiable responses (learned parameters) pass gradients to θ.
        order: K >= 1, the number of coefficients.
        lambda_max: positive number, or (B,) tensor for one interval per batch element.
        num_points: M >= order sample points (default: order).

    Returns:
        (K,) or (K, C) for a scalar ``lambda_max``; (B, K, 1) or (B, K, C) for (B,): the
        layouts of ``chebyshev_filter``. float64 unless ``lambda_max`` is a floating tensor.
    """
    _check_order(order)
    num_points = order if num_points is None else num_points
    _check_order(num_points, "num_points")
    if num_points < order:
        raise ValueError(f"num_points must be >= order = {order}, found {num_points}")
    if not callable(h):
        raise ValueError(f"h must be a callable h(λ), found {type(h).__name__}")
    nodes = chebyshev_nodes(num_points, lambda_max)  # (M,) or (B, M)
    values = torch.as_tensor(h(nodes))
    if not values.is_floating_point():
        values = values.to(nodes.dtype)
    if values.shape != nodes.shape and values.shape[:-1] != nodes.shape:
        raise ValueError(
            f"h must return the shape of its input {tuple(nodes.shape)} or that shape plus a "
            f"channel axis, found {tuple(values.shape)}"
        )
    if not bool(torch.isfinite(values.detach()).all()):
        raise ValueError("h must be finite on [0, lambda_max], found NaN or Inf values")
    values = values.to(nodes.dtype)
    angles = _node_angles(num_points, nodes)
    degrees = torch.arange(order, dtype=nodes.dtype, device=nodes.device)
    cosines = torch.cos(degrees.unsqueeze(-1) * angles)  # (K, M)
    weights = torch.full((order, 1), 2.0 / num_points, dtype=nodes.dtype, device=nodes.device)
    weights[0] = 1.0 / num_points
    transform = weights * cosines  # (K, M)
    scalar_response = values.shape == nodes.shape
    samples = values.unsqueeze(-1) if scalar_response else values  # (..., M, C)
    theta = transform @ samples  # (..., K, C)
    if nodes.dim() == 1 and scalar_response:
        return theta.squeeze(-1)
    return theta


# --------------------------------------------------------------------------- subspace


def subspace_filter(
    graph: NeighborGraph,
    eigenvectors: Tensor,
    response: Tensor,
    x: Tensor,
    kind: LaplacianKind | str = "symmetric",
) -> Tensor:
    """h(L) X on the span of k eigenvectors of the Laplacian of ``kind``, (B, N, C).

    Args:
        graph: the graph the eigenvectors belong to (its degrees, for random_walk).
        eigenvectors: (B, N, k). "unnormalized" and "symmetric": orthonormal columns U
            of L; "random_walk": V = D^-1/2 U with U those of L_sym, so Vᵀ D V = I (the
            convention of ``partial_eigh`` and the dense solver).
        response: h at the k eigenvalues, (B, k) or (B, k, C).
        x: (B, N, C).
        kind: the Laplacian.

    Returns:
        U h Uᵀ X, or for random_walk V h Vᵀ D X = D^-1/2 U h Uᵀ D^1/2 X, which is
        h(L_rw) X when all N pairs are given (L_rw = D^-1/2 L_sym D^1/2). With k < N
        the filter acts as 0 outside the span. At an isolated node V is 0 (D^-1/2 is
        taken as 0 there), so the output is 0. Differentiable in every tensor.
    """
    kind = laplacian_kind(kind)
    if kind is LaplacianKind.RANDOM_WALK:
        x = degree(graph).unsqueeze(-1).to(x.dtype) * x
    weights = response.unsqueeze(-1) if response.dim() == 2 else response
    if weights.shape[:2] != eigenvectors.shape[::2] or x.shape[:2] != eigenvectors.shape[:2]:
        raise ValueError(
            f"subspace_filter takes eigenvectors (B, N, k), response (B, k[, C]) and x "
            f"(B, N, C); found {tuple(eigenvectors.shape)}, {tuple(response.shape)} and "
            f"{tuple(x.shape)}"
        )
    coordinates = eigenvectors.transpose(-1, -2) @ x  # (B, k, C)
    return eigenvectors @ (weights.to(x.dtype) * coordinates)
