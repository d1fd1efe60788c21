"""Test matrices with known spectra, shared by the eigensolver tests."""

from __future__ import annotations

import numpy as np
import torch

from cheeger.ops.graph import NeighborGraph


def random_symmetric(batch: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype)


def random_orthogonal(n: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def with_spectrum(values, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(Q diag(values) Qᵀ, Q): exactly repeated eigenvalues, known eigenvectors."""
    q = random_orthogonal(len(values), seed)
    a = q @ np.diag(values) @ q.T
    return torch.from_numpy(0.5 * (a + a.T)), q


def component_laplacian(sizes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense L = D - W of complete components with random weights, nodes shuffled.

    Returns L and each node's component label. Shuffled because a block-diagonal L lets
    LAPACK return eigenvectors supported on single components, which hides couplings.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    same = labels[:, None] == labels[None, :]
    upper = np.triu(rng.uniform(0.5, 1.5, same.shape) * same, 1)
    w = upper + upper.T
    return np.diag(w.sum(1)) - w, labels


def indicator_basis(labels: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the Laplacian null space: normalised component indicators."""
    onehot = (labels[:, None] == np.arange(labels.max() + 1)[None, :]).astype(float)
    return onehot / np.sqrt(onehot.sum(0))


def graph_from_dense(dense: np.ndarray, extra: int = 1) -> NeighborGraph:
    """Neighbour lists of a dense symmetric (B, N, N), with ``extra`` self-pointing
    zero-weight padding slots per row beyond the largest degree."""
    batch, n, _ = dense.shape
    slots = max(1, int((dense > 0).sum(-1).max()) + extra)
    index = np.tile(np.arange(n)[None, :, None], (batch, 1, slots))
    weight = np.zeros((batch, n, slots))
    for b in range(batch):
        for i in range(n):
            cols = np.flatnonzero(dense[b, i])
            index[b, i, : cols.size] = cols
            weight[b, i, : cols.size] = dense[b, i, cols]
    return NeighborGraph(torch.from_numpy(index), torch.from_numpy(weight))
