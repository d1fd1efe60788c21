"""Hypothesis strategies for the spectral ops: graphs, spectra and point clouds.

Graphs are drawn as a few numbers (component sizes, shape, weight decades, a seed)
from which numpy builds the adjacency, so that hypothesis shrinks a failure to a
small description rather than to an edge list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cheeger.ops.graph import NeighborGraph
from tests.ops.spectra import graph_from_dense, with_spectrum

DTYPES = st.sampled_from([torch.float32, torch.float64])
SHAPES = ("random", "complete", "cycle", "star", "path")

# ``fuzz-fast`` runs in ``make test``: a few examples, drawn in a fixed order
# (derandomized) so that the suite is reproducible and its time predictable.
# ``fuzz-extended`` runs in ``make test-slow`` (the tests marked ``slow``): many random
# examples, new ones every run. Registered here, where ``property_test`` uses them, so
# that property tests outside tests/ops (tests/models) find them too.
# Neither profile checks wall-clock speed: on a shared 2-core machine data generation can
# take 5x its CPU time and hypothesis would fail a correct test (``too_slow``).
settings.register_profile(
    "fuzz-fast",
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz-extended",
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Each property runs under both profiles; the extended one is slow.
PROFILES = [
    pytest.param("fuzz-fast", id="fast"),
    pytest.param("fuzz-extended", id="extended", marks=pytest.mark.slow),
]


def property_test(check: Callable[..., None], **strategies: st.SearchStrategy) -> Callable:
    """A pytest test that checks the property ``check`` on examples of ``strategies``,
    once per profile: ``test_x = property_test(check_x, case=graph_cases())``."""

    @pytest.mark.parametrize("profile", PROFILES)
    def test(profile: str) -> None:
        settings(settings.get_profile(profile))(given(**strategies)(check))()

    test.__doc__ = check.__doc__
    return test


@dataclass(frozen=True)
class GraphCase:
    """A symmetric weighted graph: dense (N, N) float64 adjacency, the dtype to test in,
    each node's component, and whether all weights lie within two decades."""

    dense: np.ndarray
    dtype: torch.dtype
    labels: np.ndarray
    moderate: bool

    @property
    def num_nodes(self) -> int:
        return self.dense.shape[0]

    @property
    def graph(self) -> NeighborGraph:
        graph = graph_from_dense(self.dense[None])
        return NeighborGraph(graph.index, graph.weight.to(self.dtype))


def _component_edges(shape: str, size: int, density: float, rng) -> np.ndarray:
    """Upper-triangular 0/1 edges of one connected component of ``size`` nodes."""
    edges = np.zeros((size, size))
    chain = np.arange(size - 1)
    if shape == "complete":
        return np.triu(np.ones((size, size)), 1)
    if shape == "star":
        edges[0, 1:] = 1.0
        return edges
    edges[chain, chain + 1] = 1.0
    if shape == "cycle" and size > 2:
        edges[0, size - 1] = 1.0
    if shape == "random":
        edges = np.maximum(edges, np.triu(rng.random((size, size)) < density, 1))
    return edges


@st.composite
def graph_cases(draw, max_nodes: int = 16) -> GraphCase:
    """Unions of components (size 1: an isolated node) of one shape, nodes shuffled.

    Weights are log-uniform between 10^low and 10^high (low, high in [-8, 8]); when
    low = high they are all equal up to a relative jitter (0, 1e-9, 1e-6 or 1e-3), which
    gives exactly or nearly repeated eigenvalues (complete graphs, cycles, stars).
    """
    sizes = draw(
        st.lists(st.integers(1, 8), min_size=1, max_size=4).filter(
            lambda s: 2 <= sum(s) <= max_nodes
        )
    )
    shape = draw(st.sampled_from(SHAPES))
    low = draw(st.integers(-8, 8))
    high = draw(st.integers(low, min(8, low + 16)))
    jitter = draw(st.sampled_from([0.0, 1e-9, 1e-6, 1e-3]))
    density = draw(st.floats(0.1, 0.9))
    dtype = draw(DTYPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = sum(sizes)
    dense = np.zeros((n, n))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    start = 0
    for size in sizes:
        block = _component_edges(shape, size, density, rng)
        if low == high:
            weights = 10.0**low * (1.0 + jitter * rng.uniform(-1, 1, block.shape))
        else:
            weights = 10.0 ** rng.uniform(low, high, block.shape)
        block = block * weights
        dense[start : start + size, start : start + size] = block + block.T
        start += size
    order = rng.permutation(n)
    return GraphCase(dense[np.ix_(order, order)], dtype, labels[order], high - low <= 2)


@st.composite
def spectra(draw, max_size: int = 10) -> tuple[torch.Tensor, np.ndarray]:
    """A symmetric (N, N) matrix Q diag(λ) Qᵀ with repeated and nearly repeated eigenvalues.

    λ: a few levels (multiples of 1/8 in [-1, 1]), each repeated, some split by gaps of
    1e-12 to 1e-2, the whole spectrum scaled by 10^[-4, 4].

    Returns (A in the drawn dtype, the sorted λ).
    """
    levels = [v / 8 for v in draw(st.lists(st.integers(-8, 8), min_size=1, max_size=4))]
    counts = draw(st.lists(st.integers(1, 4), min_size=len(levels), max_size=len(levels)))
    values = np.repeat(levels, counts)[:max_size]
    splits = draw(st.lists(st.integers(-12, -2), min_size=len(values), max_size=len(values)))
    split = draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    values = values + np.where(split, 10.0 ** np.array(splits, dtype=float), 0.0)
    if values.size < 2:
        values = np.append(values, values[0])
    values = values * 10.0 ** draw(st.floats(-4, 4))
    matrix, _ = with_spectrum(values, draw(st.integers(0, 2**16)))
    return matrix.to(draw(DTYPES)), np.sort(values)


@st.composite
def point_clouds(draw, max_points: int = 20) -> torch.Tensor:
    """(1, N, C) features with exact duplicate rows and possibly zero rows, any scale."""
    n = draw(st.integers(2, max_points))
    channels = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    distinct = draw(st.integers(1, n))
    points = rng.standard_normal((distinct, channels))
    if draw(st.booleans()):
        points[0] = 0.0
    rows = np.concatenate([np.arange(distinct), rng.integers(0, distinct, n - distinct)])
    features = points[rng.permutation(rows)] * 10.0 ** draw(st.floats(-3, 3))
    return torch.from_numpy(features[None]).to(draw(DTYPES))
