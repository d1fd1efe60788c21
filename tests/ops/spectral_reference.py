"""Reference spectral filters for the tests: h(L) X exactly through eigenvectors, or by
the Chebyshev method, behind one call (the response h a callable, the method an argument).

The package filters with ``subspace_filter`` and ``chebyshev_filter``
(``cheeger.ops.chebyshev``); these references state the same results the plain way
(U h(Λ) Uᵀ X through a dense ``eigh``) so that tests can compare against them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cheeger.ops.chebyshev import (
    Response,
    _check_lambda_max,
    _check_signal,
    chebyshev_coefficients,
    chebyshev_filter,
)
from cheeger.ops.eigh import eigh
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.laplacian import (
    LaplacianKind,
    inverse_degree_power,
    lambda_max_bound,
    laplacian_kind,
    laplacian_to_dense,
)

FilterMethod = Literal["exact", "chebyshev"]
FILTER_METHODS = ("exact", "chebyshev")


def exact_spectral_filter(
    eigenvectors: Tensor,
    eigenvalues: Tensor,
    response: Tensor | Response,
    x: Tensor,
) -> Tensor:
    """U diag(h(λ)) Uᵀ X in the span of the given eigenvectors.

    Args:
        eigenvectors: (B, N, k) with orthonormal columns (``eigh``, a partial solver or a
            Nyström basis).
        eigenvalues: (B, k).
        response: the values h(λ) as (B, k) or (B, k, C), or a callable h applied to
            ``eigenvalues`` (see :data:`Response`).
        x: (B, N, C).

    Returns:
        (B, N, C). With all N eigenvectors this is h(L) X exactly; with k < N it is
        P h(L) P X, P = U Uᵀ the projector onto the span (so h acts as 0 outside it).
        Differentiable in every tensor argument. Costs O(B N k C).
    """
    for name, tensor, dims in (("eigenvectors", eigenvectors, 3), ("x", x, 3)):
        if not isinstance(tensor, Tensor) or tensor.dim() != dims:
            found = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a (B, N, ·) tensor, found {found}")
    batch, num_nodes, rank = eigenvectors.shape
    if not isinstance(eigenvalues, Tensor) or eigenvalues.shape != (batch, rank):
        found = tuple(eigenvalues.shape) if isinstance(eigenvalues, Tensor) else eigenvalues
        raise ValueError(f"eigenvalues must be (B, k) = ({batch}, {rank}), found {found}")
    if x.shape[:2] != (batch, num_nodes):
        raise ValueError(f"x must be (B, N, C) = ({batch}, {num_nodes}, C), found {tuple(x.shape)}")
    values = response(eigenvalues) if callable(response) else response
    values = torch.as_tensor(values).to(dtype=x.dtype, device=x.device)
    if values.shape == (batch, rank):
        values = values.unsqueeze(-1)
    if (
        values.dim() != 3
        or values.shape[:2] != (batch, rank)
        or values.shape[2]
        not in (
            1,
            x.shape[-1],
        )
    ):
        raise ValueError(
            f"response must give (B, k) = ({batch}, {rank}) or (B, k, C) values with "
            f"C = {x.shape[-1]}, found {tuple(values.shape)}"
        )
    coordinates = eigenvectors.transpose(-1, -2) @ x  # (B, k, C)
    return eigenvectors @ (values * coordinates)


def spectral_filter(
    graph: NeighborGraph,
    x: Tensor,
    response: Response,
    method: FilterMethod = "chebyshev",
    *,
    kind: LaplacianKind | str = "symmetric",
    order: int = 30,
    lambda_max: Tensor | float | None = None,
    num_points: int | None = None,
    eigenpairs: tuple[Tensor, Tensor] | None = None,
    backward: str = "lorentzian",
    eps: float | None = None,
) -> Tensor:
    """h(L) X for a response h, by the chosen method.

    Args:
        graph: symmetric NeighborGraph (B, N, K').
        x: (B, N, C).
        response: h(λ), elementwise (see :data:`Response`).
        method: "chebyshev": fit ``order`` coefficients on [0, lambda_max]
            (:func:`chebyshev_coefficients`) and apply :func:`chebyshev_filter`;
            "exact": U h(Λ) Uᵀ X through ``eigenpairs`` = (eigenvalues (B, k),
            eigenvectors (B, N, k)) of the Laplacian of ``kind``, or, when None, through a
            dense differentiable ``eigh`` of the whole Laplacian (O(N³); ``backward`` names
            its gradient mode, see ``cheeger.ops.eigh``).
        kind: "symmetric", "unnormalized" or "random_walk". For "random_walk" the exact
            method computes D^-1/2 U h(Λ) Uᵀ D^1/2 X, so ``eigenpairs`` must then be
            those of L_sym (L_rw is not symmetric); at an isolated node (D = 0) it takes
            D^1/2 = 1, which gives h(1) x there, as the Chebyshev method does.
        order, lambda_max, num_points: Chebyshev options (lambda_max: default bound).
        eps: isolated-node threshold of the degree normalisation.

    Returns:
        (B, N, C).
    """
    kind = laplacian_kind(kind)
    if method not in FILTER_METHODS:
        raise ValueError(f"method must be one of {FILTER_METHODS}, found {method!r}")
    _check_signal(x, graph)
    if method == "chebyshev":
        if lambda_max is None:
            lambda_max = lambda_max_bound(graph, kind)
        lambda_max = _check_lambda_max(lambda_max, graph.batch_size, x)
        theta = chebyshev_coefficients(response, order, lambda_max, num_points)
        return chebyshev_filter(graph, x, theta, kind, lambda_max, eps)
    symmetric_kind = LaplacianKind.SYMMETRIC if kind is LaplacianKind.RANDOM_WALK else kind
    if eigenpairs is None:
        dense = laplacian_to_dense(graph, symmetric_kind, eps)
        eigenvalues, eigenvectors = eigh(dense, backward=backward)
    else:
        eigenvalues, eigenvectors = eigenpairs
    if kind is not LaplacianKind.RANDOM_WALK:
        return exact_spectral_filter(eigenvectors, eigenvalues, response, x)
    # h(L_rw) X = T^-1 h(L_sym) T X with T = D^1/2 (1 at isolated nodes, as in the
    # Chebyshev method, whose L_rw row there is the identity row: h(1) x).
    root = inverse_degree_power(graph, 0.5, eps)
    isolated = root == 0
    similarity = torch.where(isolated, torch.ones_like(root), 1.0 / root.masked_fill(isolated, 1))
    similarity = similarity.unsqueeze(-1)
    filtered = exact_spectral_filter(eigenvectors, eigenvalues, response, similarity * x)
    return filtered / similarity
