"""Graph Laplacians of a NeighborGraph: matrix-free products and explicit matrices.

With W the (symmetric) adjacency and D = diag(d), d_i = sum_l W_il:

* ``"unnormalized"``: L     = D - W                         eigenvalues in [0, 2 max d]
* ``"symmetric"``:    L_sym = I - D^-1/2 W D^-1/2           eigenvalues in [0, 2]
* ``"random_walk"``:  L_rw  = I - D^-1 W                    same eigenvalues as L_sym

Isolated nodes. A node whose degree is at most ``eps`` is isolated and the
inverse powers are defined as 0 there: D^-1/2 = D^-1 = 0. Its row and column of
D^-1/2 W D^-1/2 (and D^-1 W) vanish, so its row of L_sym and L_rw is the
identity row: the isolated node is an eigenvector with eigenvalue 1, not 0.
Chosen because (a) the spectral head keeps the smallest eigenpairs, and a zero
mode per isolated pixel would fill them with one-pixel indicator vectors and
create exactly repeated eigenvalues, whose eigenvector gradients blow up; (b)
the formulas stay literal (I minus a normalised adjacency) with the spectrum
in [0, 2]. (scipy.sparse.csgraph.laplacian(normed=True) puts 0 on such a
diagonal instead; L = D - W has a zero row for it, as usual.) Consequently the
multiplicity of eigenvalue 0 equals the number of connected components for L,
and the number of components with at least one edge for L_sym and L_rw.

``eps`` (default: the dtype's machine epsilon) also keeps gradients finite: the
derivative of d^-1/2 is -d^-3/2 / 2, which would overflow for the tiny but
positive degrees that Gaussian weights produce far from everything.
"""

from __future__ import annotations

from enum import Enum

import scipy.sparse
import torch
from torch import Tensor

from cheeger.ops.graph import NeighborGraph, adjacency_matvec, degree, to_dense, to_scipy


class LaplacianKind(str, Enum):
    """Laplacian names as used in configs; a plain string with the same value works too."""

    UNNORMALIZED = "unnormalized"
    SYMMETRIC = "symmetric"
    RANDOM_WALK = "random_walk"


LAPLACIAN_KINDS = tuple(kind.value for kind in LaplacianKind)


def laplacian_kind(kind: LaplacianKind | str) -> LaplacianKind:
    """Parse a kind name; ValueError listing the valid names otherwise."""
    try:
        return LaplacianKind(kind)
    except ValueError:
        raise ValueError(f"kind must be one of {LAPLACIAN_KINDS}, found {kind!r}") from None


def _default_eps(dtype: torch.dtype, eps: float | None) -> float:
    if eps is None:
        return float(torch.finfo(dtype).eps)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, found {eps}")
    return float(eps)


def inverse_degree_power(
    graph: NeighborGraph, exponent: float = 0.5, eps: float | None = None
) -> Tensor:
    """d_i^-exponent where d_i > eps, and 0 at isolated nodes (d_i <= eps); (B, N).

    Differentiable with finite gradients everywhere: the power is taken of
    max(d, eps, tiny) and the isolated entries are selected away.
    """
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, found {exponent}")
    eps = _default_eps(graph.weight.dtype, eps)
    deg = degree(graph)
    floor = max(eps, float(torch.finfo(deg.dtype).tiny))
    powered = deg.clamp_min(floor).pow(-exponent)
    return torch.where(deg > eps, powered, torch.zeros_like(powered))


def normalized_adjacency(graph: NeighborGraph, eps: float | None = None) -> NeighborGraph:
    """D^-1/2 W D^-1/2 as a NeighborGraph (same index), so that L_sym = I - it.

    Worth building once when many products follow (Chebyshev filters, eigensolvers);
    ``laplacian_matvec`` applies the scaling on the fly instead.
    """
    scale = inverse_degree_power(graph, 0.5, eps)
    batch, num_nodes, slots = graph.index.shape
    neighbour_scale = scale.gather(1, graph.index.reshape(batch, -1)).view(batch, num_nodes, slots)
    return NeighborGraph.derived(
        graph.index, graph.weight * scale.unsqueeze(-1) * neighbour_scale
    )


def laplacian_matvec(
    graph: NeighborGraph,
    x: Tensor,
    kind: LaplacianKind | str = "symmetric",
    eps: float | None = None,
) -> Tensor:
    """L X without forming L.

    Args:
        graph: symmetric NeighborGraph (B, N, K).
        x: (B, N, m), dtype of ``graph.weight``.
        kind: "unnormalized", "symmetric" or "random_walk".
        eps: degrees <= eps count as isolated (default: machine epsilon of the dtype).

    Returns:
        (B, N, m): D X - W X, X - D^-1/2 W D^-1/2 X, or X - D^-1 W X. One sparse
        product per call; differentiable in ``graph.weight`` and ``x``.
    """
    kind = laplacian_kind(kind)
    if kind is LaplacianKind.UNNORMALIZED:
        return torch.addcmul(-adjacency_matvec(graph, x), degree(graph).unsqueeze(-1), x)
    if kind is LaplacianKind.SYMMETRIC:
        scale = inverse_degree_power(graph, 0.5, eps).unsqueeze(-1)
        return torch.addcmul(x, scale, adjacency_matvec(graph, scale * x), value=-1.0)
    scale = inverse_degree_power(graph, 1.0, eps).unsqueeze(-1)
    return torch.addcmul(x, scale, adjacency_matvec(graph, x), value=-1.0)


def laplacian_to_dense(
    graph: NeighborGraph, kind: LaplacianKind | str = "symmetric", eps: float | None = None
) -> Tensor:
    """The Laplacian as a dense (B, N, N) tensor, differentiable in the weights."""
    kind = laplacian_kind(kind)
    adjacency = to_dense(graph)
    num_nodes = graph.num_nodes
    eye = torch.eye(num_nodes, dtype=adjacency.dtype, device=adjacency.device)
    if kind is LaplacianKind.UNNORMALIZED:
        return torch.diag_embed(degree(graph)) - adjacency
    if kind is LaplacianKind.SYMMETRIC:
        scale = inverse_degree_power(graph, 0.5, eps)
        return eye - scale.unsqueeze(-1) * adjacency * scale.unsqueeze(-2)
    scale = inverse_degree_power(graph, 1.0, eps)
    return eye - scale.unsqueeze(-1) * adjacency


def laplacian_to_scipy(
    graph: NeighborGraph, kind: LaplacianKind | str = "symmetric", eps: float | None = None
) -> list[scipy.sparse.csr_matrix]:
    """The Laplacian of each batch element as a float64 scipy CSR matrix (N, N)."""
    kind = laplacian_kind(kind)
    num_nodes = graph.num_nodes
    identity = scipy.sparse.identity(num_nodes, format="csr")
    out = []
    if kind is LaplacianKind.UNNORMALIZED:
        degrees = degree(graph).detach().cpu().double().numpy()
        for b, adjacency in enumerate(to_scipy(graph)):
            out.append((scipy.sparse.diags(degrees[b]) - adjacency).tocsr())
        return out
    exponent = 0.5 if kind is LaplacianKind.SYMMETRIC else 1.0
    scale = inverse_degree_power(graph, exponent, eps).detach().cpu().double().numpy()
    for b, adjacency in enumerate(to_scipy(graph)):
        left = scipy.sparse.diags(scale[b])
        right = left if kind is LaplacianKind.SYMMETRIC else identity
        out.append((identity - left @ adjacency @ right).tocsr())
    return out


def lambda_max_bound(graph: NeighborGraph, kind: LaplacianKind | str = "symmetric") -> Tensor:
    """A cheap upper bound on the largest eigenvalue, one per batch element, (B,).

    2 for "symmetric" and "random_walk" (exact for bipartite components);
    2 max_i d_i for "unnormalized" (Gershgorin: row i of D - W has absolute sum
    2 d_i). Meant for rescaling spectra into [-1, 1] for Chebyshev filters; the
    combinatorial bound is differentiable in the weights.
    """
    kind = laplacian_kind(kind)
    if kind is LaplacianKind.UNNORMALIZED:
        return 2.0 * degree(graph).amax(dim=-1)
    return graph.weight.new_full((graph.batch_size,), 2.0)
