"""Spectral solvers of the head (the ``solver`` config group): how h(L) reaches the pixels.

Every solver has one method the head calls,

    filter(graph, signal (B, N, E), response, kind, gate=None) -> (h(L) X (B, N, E), SpectralInfo)

with ``response(eigenvalues (B, M), lambda_max (B,)) -> h (B, M)`` (a
``cheeger.models.response.SpectralResponse``) and ``kind`` the Laplacian. Whatever the
solver, ``laplacian=random_walk`` means h(L_rw) X = D^-1/2 U h(Λ) Uᵀ D^1/2 X with
L_sym = U Λ Uᵀ (``cheeger.ops.chebyshev.subspace_filter``).

* eigenpair solvers compute the k smallest eigenpairs (their ``eigenpairs`` method) and
  apply h on their span; :class:`SpectralInfo` then carries the eigenpairs (panels,
  losses, the noise gate):
  - :class:`DenseSolver` (``dense``): the dense Laplacian and ``cheeger.ops.eigh``,
    O(N³), guarded by ``max_nodes``;
  - :class:`PartialSolver` (``lanczos``): ``cheeger.ops.partial_eigh``, the batched
    Chebyshev-filtered block solver with implicit-differentiation backward, O(nnz k);
  - :class:`NystromSolver` (``nystrom``): ``cheeger.ops.nystrom``, landmarks on the
    dense Gaussian/cosine kernel of the graph's ``node_features`` with its
    ``bandwidth`` (attached by the affinity); it ignores the graph's edges and its
    Laplacian is the symmetric one;
* :class:`ChebyshevSolver` (``chebyshev``) computes no eigenpairs: h(L) X over the
  whole spectrum by a Chebyshev polynomial of the response, ``order - 1`` sparse products.

Solvers hold options only (no parameters), so they are plain classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from cheeger.ops.backward_modes import BACKWARD_MODES
from cheeger.ops.chebyshev import chebyshev_coefficients, chebyshev_filter, subspace_filter
from cheeger.ops.checks import check_int
from cheeger.ops.eigh import eigh
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.laplacian import inverse_degree_power, lambda_max_bound, laplacian_to_dense
from cheeger.ops.nystrom import LANDMARK_METHODS, NYSTROM_KERNELS, nystrom_fit
from cheeger.ops.partial_eigh import check_partial_options, partial_eigh

# response(eigenvalues (B, M), lambda_max (B,)) -> h (B, M)
Response = Callable[[Tensor, Tensor], Tensor]
# gate(eigenvalues (B, k), eigenvectors (B, N, k)) -> factor (B, k) multiplying h
Gate = Callable[[Tensor, Tensor], Tensor]


class Eigenpairs(NamedTuple):
    eigenvalues: Tensor  # (B, k) ascending
    eigenvectors: Tensor  # (B, N, k) orthonormal (D-orthonormal for random_walk)
    iterations: int | None = None  # solver iterations, when it iterates
    residual: float | None = None  # largest relative residual, when it measures one


@dataclass
class SpectralInfo:
    """What a solver's ``filter`` computed besides the filtered signal.

    Attributes:
        lambda_max: (B,) the spectrum bound the response was evaluated on.
        eigenvalues: (B, k), or None for solvers without eigenpairs.
        eigenvectors: (B, N, k), or None (D-orthonormal for random_walk).
        response: (B, k) the h applied to each eigenpair (gate included), or None.
        iterations: solver iterations (Chebyshev: sparse products), when known.
        residual: largest relative eigen-residual, when the solver measures one.
    """

    lambda_max: Tensor
    eigenvalues: Tensor | None = None
    eigenvectors: Tensor | None = None
    response: Tensor | None = None
    iterations: int | None = None
    residual: float | None = None


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming the config key."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"solver.{key} must be one of {allowed}, found {value!r}")
    return value


class SpectralSolver:
    """Interface: ``filter``; eigenpair solvers implement ``eigenpairs`` and inherit it."""

    name = "solver"
    provides_eigenpairs = True
    # Laplacian kinds the solver can produce (None: all).
    laplacians: tuple[str, ...] | None = None

    def __init__(self, k: int = 16) -> None:
        # The only static check of k (the top-level `k` of the config is solver.k).
        self.k = check_int("k (solver.k)", k, 1)

    def check_num_nodes(self, num_nodes: int) -> None:
        """ValueError, naming the option and the fix, if a graph of this size is refused."""
        if self.provides_eigenpairs and num_nodes <= self.k:
            raise ValueError(
                f"solver={self.name} with k={self.k} needs a graph of more than k nodes; "
                f"found N = {num_nodes} (lower k, or model.output_stride for head.mode="
                "embedding)"
            )

    def eigenpairs(self, graph: NeighborGraph, kind: str) -> Eigenpairs:
        """The k smallest eigenpairs of the Laplacian of ``kind`` (eigenpair solvers)."""
        raise NotImplementedError

    def filter(
        self,
        graph: NeighborGraph,
        signal: Tensor,
        response: Response,
        kind: str,
        gate: Gate | None = None,
    ) -> tuple[Tensor, SpectralInfo]:
        """h(L) X on the span of the k smallest eigenpairs; ``gate`` scales h per pair."""
        self.check_num_nodes(graph.num_nodes)
        lambda_max = lambda_max_bound(graph, kind).to(signal.dtype)
        pairs = self.eigenpairs(graph, kind)
        weights = response(pairs.eigenvalues, lambda_max)
        if gate is not None:
            weights = weights * gate(pairs.eigenvalues, pairs.eigenvectors)
        filtered = subspace_filter(graph, pairs.eigenvectors, weights, signal, kind)
        info = SpectralInfo(
            lambda_max,
            pairs.eigenvalues,
            pairs.eigenvectors,
            weights,
            pairs.iterations,
            pairs.residual,
        )
        return filtered, info


class DenseSolver(SpectralSolver):
    """Dense Laplacian + ``cheeger.ops.eigh`` (bounded backward ``backward``/``eps``)."""

    name = "dense"

    def __init__(
        self, k: int = 16, backward: str = "lorentzian", eps: float = 1e-4, max_nodes: int = 4096
    ):
        super().__init__(k)
        self.backward = _choice("backward", backward, BACKWARD_MODES)
        self.eps = eps
        self.max_nodes = max_nodes

    def check_num_nodes(self, num_nodes: int) -> None:
        super().check_num_nodes(num_nodes)
        if num_nodes > self.max_nodes:
            raise ValueError(
                f"solver=dense forms the {num_nodes} x {num_nodes} Laplacian; that exceeds "
                f"solver.max_nodes={self.max_nodes}. Use solver=lanczos or solver=chebyshev "
                "(sparse), or a smaller graph (model.output_stride for head.mode=embedding)."
            )

    def eigenpairs(self, graph, kind):
        symmetric_kind = "symmetric" if kind == "random_walk" else kind
        dense = laplacian_to_dense(graph, symmetric_kind)
        values, vectors = eigh(dense, k=self.k, backward=self.backward, eps=self.eps)
        if kind == "random_walk":
            vectors = inverse_degree_power(graph, 0.5).unsqueeze(-1) * vectors
        return Eigenpairs(values, vectors)


class PartialSolver(SpectralSolver):
    """``cheeger.ops.partial_eigh`` with its options (see its docstring)."""

    name = "lanczos"

    def __init__(
        self,
        k: int = 16,
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
        super().__init__(k)
        # Checked here, named by config key, so that a bad value fails before any data.
        self.options = check_partial_options(
            prefix="solver.",
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

    def eigenpairs(self, graph, kind):
        values, vectors, info = partial_eigh(graph, self.k, kind, **self.options)
        return Eigenpairs(values, vectors, info.iterations, info.max_residual)


class NystromSolver(SpectralSolver):
    """``cheeger.ops.nystrom.nystrom_fit`` on the graph's node features and bandwidth."""

    name = "nystrom"
    laplacians = ("symmetric",)

    def __init__(
        self,
        k: int = 16,
        num_landmarks: int = 256,
        kernel: str = "gaussian",
        landmarks: str = "fps",
        backward: str = "lorentzian",
        eps: float = 1e-4,
    ) -> None:
        super().__init__(k)
        check_int("solver.num_landmarks", num_landmarks, 1)
        if num_landmarks < self.k:
            raise ValueError(
                f"solver=nystrom needs solver.num_landmarks >= k; found "
                f"num_landmarks={num_landmarks} and k={self.k}"
            )
        self.num_landmarks = num_landmarks
        self.kernel = _choice("kernel", kernel, NYSTROM_KERNELS)
        self.landmarks = _choice("landmarks", landmarks, LANDMARK_METHODS)
        self.backward = _choice("backward", backward, BACKWARD_MODES)
        self.eps = eps

    def eigenpairs(self, graph, kind):
        features = graph.node_features
        if features is None:
            raise ValueError(
                "solver=nystrom needs the graph's node_features (the affinity attaches them); "
                "this graph has none"
            )
        sigma = graph.bandwidth
        if self.kernel == "gaussian" and sigma is None:
            raise ValueError(
                "solver=nystrom with solver.kernel=gaussian needs the affinity's bandwidth; "
                "the chosen affinity has no sigma (use affinity=gaussian/grid_bilateral/"
                "learned_metric or solver.kernel=cosine)"
            )
        fit = nystrom_fit(
            features,
            min(self.num_landmarks, features.shape[1]),
            self.k,
            kernel=self.kernel,
            sigma=sigma if self.kernel == "gaussian" else None,
            landmarks=self.landmarks,
            backward=self.backward,
            eps=self.eps,
        )
        return Eigenpairs(fit.eigenvalues, fit.eigenvectors)


class ChebyshevSolver(SpectralSolver):
    """h(L) X by a Chebyshev polynomial p of ``order`` terms fitted to the response.

    The interpolant is shifted by the constant h(0) - p(0) (added to θ_0, since
    T_k(-1) = (-1)^k), so that it is exact at λ = 0: a signal in the null space (for
    random_walk and unnormalized, a constant on each connected component) is scaled by
    exactly h(0), as an eigenpair solver does. The shift is at most the fit's error.
    """

    name = "chebyshev"
    provides_eigenpairs = False

    def __init__(self, order: int = 16) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"solver.order must be an int >= 1, found {order!r}")
        self.order = order

    def filter(self, graph, signal, response, kind, gate=None):
        if gate is not None:
            raise ValueError("solver=chebyshev computes no eigenpairs, so it cannot gate them")
        lambda_max = lambda_max_bound(graph, kind).to(signal.dtype)

        def at(eigenvalues: Tensor) -> Tensor:
            return response(eigenvalues, lambda_max)

        theta = chebyshev_coefficients(at, self.order, lambda_max)  # (B, K, 1)
        signs = torch.ones(self.order, dtype=theta.dtype, device=theta.device)
        signs[1::2] = -1.0
        at_zero = (theta * signs.view(1, -1, 1)).sum(dim=1)  # p(0), (B, 1)
        exact_zero = at(lambda_max.new_zeros(lambda_max.shape[0], 1))  # h(0), (B, 1)
        shift = torch.zeros_like(theta)
        shift[:, 0] = exact_zero - at_zero
        theta = theta + shift
        filtered = chebyshev_filter(graph, signal, theta, kind, lambda_max)
        return filtered, SpectralInfo(lambda_max, iterations=self.order - 1)
