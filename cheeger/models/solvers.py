"""Spectral solvers of the head (the ``solver`` config group): how h(L) reaches the pixels.

A solver turns a graph (and, for Nyström, the pixel features) into a spectral filter
of a signal X (B, N, E) with a response h:

* eigenpair solvers return the k smallest eigenpairs (λ (B, k), U (B, N, k)); the head
  then applies U h(Λ) Uᵀ X (``cheeger.ops.chebyshev.exact_spectral_filter``):
  - :class:`DenseSolver` (``dense``): the dense Laplacian and ``cheeger.ops.eigh``,
    O(N³), guarded by ``max_nodes``;
  - :class:`PartialSolver` (``lanczos``): ``cheeger.ops.partial_eigh``, the batched
    Chebyshev-filtered block solver with implicit-differentiation backward, O(nnz k);
  - :class:`NystromSolver` (``nystrom``): ``cheeger.ops.nystrom``, landmarks on the
    dense Gaussian/cosine kernel of the (metric-mapped) features, O(N m²); it ignores
    the graph's edges (it has its own kernel) and its Laplacian is the symmetric one;
* :class:`ChebyshevSolver` (``chebyshev``) computes no eigenpairs: h(L) X over the
  whole spectrum by a Chebyshev polynomial of the response, ``order - 1`` sparse products.

Solvers hold options only (no parameters), so they are plain classes.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from cheeger.ops.chebyshev import chebyshev_coefficients, chebyshev_filter
from cheeger.ops.eigh import eigh
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.laplacian import inverse_degree_power, laplacian_to_dense
from cheeger.ops.nystrom import nystrom_fit
from cheeger.ops.partial_eigh import partial_eigh


class Eigenpairs(NamedTuple):
    eigenvalues: Tensor  # (B, k) ascending
    eigenvectors: Tensor  # (B, N, k) orthonormal (D-orthonormal for random_walk)


def _check_k(k: int, num_nodes: int, solver: str) -> None:
    if k > num_nodes - 1:
        raise ValueError(
            f"k={k} eigenpairs need a feature map with more than k pixels; solver={solver} "
            f"got N = h w = {num_nodes}. Lower k or the backbone's output_stride."
        )


class SpectralSolver:
    """Interface. ``provides_eigenpairs`` tells the head which method it calls."""

    name = "solver"
    provides_eigenpairs = True
    # Laplacian kinds the solver can produce (None: all).
    laplacians: tuple[str, ...] | None = None

    def eigenpairs(
        self,
        graph: NeighborGraph,
        k: int,
        kind: str,
        features: Tensor,
        sigma: Tensor | None,
    ) -> Eigenpairs:
        """k smallest eigenpairs of the Laplacian of ``kind``; ``features`` (B, N, C) are the
        metric-mapped node features and ``sigma`` the affinity bandwidth (Nyström only)."""
        raise NotImplementedError

    def apply(
        self, graph: NeighborGraph, x: Tensor, response, kind: str, lambda_max: Tensor
    ) -> Tensor:
        """h(L) X for solvers without eigenpairs; ``response(λ (B, M)) -> (B, M)`` on
        [0, lambda_max (B,)], the spectrum bound the head already computed."""
        raise NotImplementedError


class DenseSolver(SpectralSolver):
    """Dense Laplacian + ``cheeger.ops.eigh`` (bounded backward ``backward``/``eps``)."""

    name = "dense"

    def __init__(self, backward: str = "lorentzian", eps: float = 1e-4, max_nodes: int = 4096):
        self.backward = backward
        self.eps = eps
        self.max_nodes = max_nodes

    def eigenpairs(self, graph, k, kind, features, sigma):
        num_nodes = graph.num_nodes
        _check_k(k, num_nodes, self.name)
        if num_nodes > self.max_nodes:
            raise ValueError(
                f"solver=dense forms the {num_nodes} x {num_nodes} Laplacian; that exceeds "
                f"solver.max_nodes={self.max_nodes}. Use solver=lanczos (sparse) or a coarser "
                f"feature map (model.output_stride)."
            )
        symmetric_kind = "symmetric" if kind == "random_walk" else kind
        dense = laplacian_to_dense(graph, symmetric_kind)
        values, vectors = eigh(dense, k=k, backward=self.backward, eps=self.eps)
        if kind == "random_walk":
            vectors = inverse_degree_power(graph, 0.5).unsqueeze(-1) * vectors
        return Eigenpairs(values, vectors)


class PartialSolver(SpectralSolver):
    """``cheeger.ops.partial_eigh`` with its options (see its docstring)."""

    name = "lanczos"

    def __init__(
        self,
        tol: float | None = None,
        max_iter: int = 200,
        guard: int | None = None,
        degree: int = 16,
        on_fail: str = "warn",
        dense_limit: int = 4096,
        backward: str = "lorentzian",
        eps: float = 1e-4,
        out_of_subspace: bool = True,
        backward_tol: float | None = None,
        backward_max_iter: int = 1000,
    ) -> None:
        self.options = dict(
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
        self.last_info = None

    def eigenpairs(self, graph, k, kind, features, sigma):
        _check_k(k, graph.num_nodes, self.name)
        values, vectors, info = partial_eigh(graph, k, kind, **self.options)
        self.last_info = info
        return Eigenpairs(values, vectors)


class NystromSolver(SpectralSolver):
    """``cheeger.ops.nystrom.nystrom_fit`` on the mapped features with the affinity's σ."""

    name = "nystrom"
    laplacians = ("symmetric",)

    def __init__(
        self,
        num_landmarks: int = 256,
        kernel: str = "gaussian",
        landmarks: str = "fps",
        backward: str = "lorentzian",
        eps: float = 1e-4,
    ) -> None:
        self.num_landmarks = num_landmarks
        self.kernel = kernel
        self.landmarks = landmarks
        self.backward = backward
        self.eps = eps

    def eigenpairs(self, graph, k, kind, features, sigma):
        num_nodes = features.shape[1]
        _check_k(k, num_nodes, self.name)
        landmarks = min(self.num_landmarks, num_nodes)
        if k > landmarks:
            raise ValueError(
                f"solver=nystrom needs solver.num_landmarks >= k; found "
                f"num_landmarks={landmarks} and k={k}"
            )
        if self.kernel == "gaussian" and sigma is None:
            raise ValueError(
                "solver=nystrom with solver.kernel=gaussian needs the affinity's bandwidth; "
                "the chosen affinity has no sigma (use affinity=gaussian/grid_bilateral/"
                "learned_metric or solver.kernel=cosine)"
            )
        fit = nystrom_fit(
            features,
            landmarks,
            k,
            kernel=self.kernel,
            sigma=sigma if self.kernel == "gaussian" else None,
            landmarks=self.landmarks,
            backward=self.backward,
            eps=self.eps,
        )
        return Eigenpairs(fit.eigenvalues, fit.eigenvectors)


class ChebyshevSolver(SpectralSolver):
    """h(L) X by a Chebyshev polynomial of ``order`` terms fitted to the response."""

    name = "chebyshev"
    provides_eigenpairs = False

    def __init__(self, order: int = 16) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"solver.order must be an int >= 1, found {order!r}")
        self.order = order

    def apply(self, graph, x, response, kind, lambda_max):
        theta = chebyshev_coefficients(response, self.order, lambda_max)
        return chebyshev_filter(graph, x, theta, kind, lambda_max)
