"""SpectralHead: invariance, solver agreement, gradients, bad input."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import Tensor

from cheeger.models.affinity import GridAffinity, KnnAffinity, PixelAffinity
from cheeger.models.response import (
    HeatResponse,
    LearnedResponse,
    TemperResponse,
    TruncateResponse,
)
from cheeger.models.solvers import (
    ChebyshevSolver,
    DenseSolver,
    Eigenpairs,
    NystromSolver,
    PartialSolver,
    SpectralSolver,
)
from cheeger.models.spectral_head import SpectralHead
from cheeger.ops.graph import NeighborGraph, to_dense
from cheeger.ops.laplacian import LAPLACIAN_KINDS, lambda_max_bound, laplacian_to_dense
from tests.ops.spectra import graph_from_dense
from tests.ops.spectral_reference import exact_spectral_filter
from tests.ops.strategies import graph_cases, point_clouds, property_test

F64 = torch.float64


def make_head(solver=None, response=None, affinity=None, k=6, channels=4, classes=3, **kwargs):
    """A float64 head; ``k`` is the default dense solver's (a given solver has its own)."""
    torch.manual_seed(0)
    head = SpectralHead(
        channels,
        classes,
        affinity or functools.partial(GridAffinity, radius=1),
        solver or DenseSolver(k=k),
        response or TemperResponse(1.0),
        embed_dim=5,
        dtype="float64",
        **kwargs,
    )
    return head.double()


def blocky_features(height=8, width=8, channels=4, seed=0):
    """Three flat regions with a little noise: a graph with clear cuts."""
    g = torch.Generator().manual_seed(seed)
    regions = torch.zeros(height, width, dtype=torch.long)
    regions[:, width // 2 :] = 1
    regions[height // 2 :, : width // 3] = 2
    centres = 3.0 * torch.randn(3, channels, generator=g, dtype=torch.float64)
    noise = 0.1 * torch.randn(height, width, channels, generator=g, dtype=torch.float64)
    return (centres[regions] + noise).permute(2, 0, 1).unsqueeze(0)


class FlipRotate(SpectralSolver):
    """Wraps a solver: flips eigenvector signs and rotates inside repeated eigenvalues."""

    name = "flip_rotate"

    def __init__(self, solver, seed=0, tol=1e-8):
        super().__init__(solver.k)
        self.solver, self.seed, self.tol = solver, seed, tol
        self.blocks_rotated = 0

    def eigenpairs(self, graph, kind):
        values, vectors = self.solver.eigenpairs(graph, kind)[:2]
        k = self.k
        rng = np.random.default_rng(self.seed)
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=k))
        vectors = vectors * signs
        lam = values[0].detach().numpy()
        start = 0
        while start < k:
            stop = start + 1
            while stop < k and lam[stop] - lam[start] < self.tol:
                stop += 1
            if stop - start > 1:
                q, _ = np.linalg.qr(rng.standard_normal((stop - start, stop - start)))
                block = vectors[..., start:stop] @ torch.from_numpy(q)
                vectors = torch.cat([vectors[..., :start], block, vectors[..., stop:]], dim=-1)
                self.blocks_rotated += 1
            start = stop
        return Eigenpairs(values, vectors)


@pytest.mark.parametrize(
    "response", [TemperResponse(2.0), LearnedResponse(), TruncateResponse()], ids=str
)
def test_logits_invariant_to_sign_flips_and_degenerate_rotations(response):
    # Constant features: the plain 8-neighbour grid on a square map, whose x <-> y
    # symmetry repeats eigenvalues, so rotations inside those eigenspaces are tested.
    if isinstance(response, LearnedResponse):
        torch.manual_seed(1)
        for p in response.parameters():
            torch.nn.init.normal_(p, std=0.5)
    response = response.double()
    features = torch.ones(1, 4, 6, 6, dtype=torch.float64)
    head = make_head(DenseSolver(k=10), response)
    reference, _ = head(features)
    wrapped = FlipRotate(DenseSolver(k=10), seed=3)
    head.solver = wrapped
    flipped, aux = head(features)
    assert wrapped.blocks_rotated >= 2  # the spectrum really was degenerate
    # The eigenvectors changed, the logits did not.
    assert not torch.allclose(aux["eigenvectors"], head_eigenvectors(features, head))
    torch.testing.assert_close(flipped, reference, atol=1e-10, rtol=0)


def head_eigenvectors(features, head):
    head.solver, saved = DenseSolver(k=head.solver.k), head.solver
    _, aux = head(features)
    head.solver = saved
    return aux["eigenvectors"]


def test_lanczos_and_nystrom_full_match_dense():
    features = blocky_features()
    dense_head = make_head(DenseSolver(k=4))
    reference, ref_aux = dense_head(features)
    lanczos_head = make_head(PartialSolver(k=4, tol=1e-10))
    lanczos_head.load_state_dict(dense_head.state_dict())
    logits, aux = lanczos_head(features)
    torch.testing.assert_close(aux["eigenvalues"], ref_aux["eigenvalues"], atol=1e-8, rtol=0)
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)


def test_nystrom_with_all_landmarks_uses_the_dense_kernel_spectrum():
    features = blocky_features()
    head = make_head(NystromSolver(k=4, num_landmarks=64))
    _, aux = head(features)
    nodes = head.affinity.map_features(features.flatten(2).transpose(1, 2))
    sigma = head.affinity.sigma.double()
    kernel = torch.exp(-torch.cdist(nodes, nodes).pow(2) / (2 * sigma**2))
    degree = kernel.sum(-1)
    lsym = torch.eye(64, dtype=torch.float64) - kernel / torch.sqrt(
        degree.unsqueeze(-1) * degree.unsqueeze(-2)
    )
    expected = torch.linalg.eigvalsh(lsym)[..., :4]
    torch.testing.assert_close(aux["eigenvalues"], expected, atol=1e-6, rtol=0)


def test_chebyshev_solver_equals_exact_full_spectrum_filter_for_polynomial_response():
    features = blocky_features()
    head = make_head(ChebyshevSolver(order=4), TemperResponse(2.0))
    logits, aux = head(features)
    assert "eigenvalues" not in aux and "noise_energy" not in aux
    dense = laplacian_to_dense(aux["graph"], "symmetric")
    values, vectors = torch.linalg.eigh(dense)
    value = head.value(features).flatten(2).transpose(1, 2)
    expected = exact_spectral_filter(vectors, values, (1 - values / 2) ** 2, value)
    torch.testing.assert_close(
        aux["embedding"], expected.transpose(1, 2).reshape(1, 5, 8, 8), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("solver", ["dense", "lanczos", "nystrom", "chebyshev"])
def test_gradients_reach_affinity_and_learned_response(solver):
    solvers = {
        "dense": DenseSolver(k=4),
        "lanczos": PartialSolver(k=4),
        "nystrom": NystromSolver(k=4, num_landmarks=32),
        "chebyshev": ChebyshevSolver(order=8),
    }
    head = make_head(solvers[solver], LearnedResponse(), noise_gate=solver != "chebyshev")
    features = blocky_features().requires_grad_(True)
    target = torch.randint(0, 3, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    logits, _ = head(features)
    torch.nn.functional.cross_entropy(logits, target).backward()
    named = dict(head.named_parameters())
    checked = ["affinity.metric", "response.theta", "response.output_layer.weight", "value.weight"]
    if solver != "nystrom":  # Nyström's kernel uses sigma too, but not through the graph
        checked.append("affinity.log_sigma")
    for name in checked:
        grad = named[name].grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().max() > 0, name
    assert torch.isfinite(features.grad).all()


def test_knn_affinity_head_runs_at_full_resolution():
    head = make_head(
        PartialSolver(k=4), affinity=functools.partial(KnnAffinity, knn=5, kernel="gaussian")
    )
    logits, aux = head(blocky_features(), torch.zeros(1, 3, 16, 16, dtype=F64))
    assert logits.shape == (1, 3, 16, 16)
    assert aux["graph"].num_nodes == 64  # one node per feature pixel: no pooling
    assert aux["eigenvectors"].shape == (1, 4, 8, 8)


def test_noise_energy_is_a_share_and_the_gate_lowers_noise_directions():
    head = make_head(DenseSolver(k=8), TruncateResponse())
    g = torch.Generator().manual_seed(0)
    _, aux = head(torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64))
    assert "noise_energy" in aux and not aux.is_computed("noise_energy")  # not paid for yet
    assert 0.0 <= float(aux["noise_energy"]) <= 1.0
    gated = make_head(DenseSolver(k=8), TruncateResponse(), noise_gate=True)
    _, gated_aux = gated(torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64))
    assert float(gated_aux["response"].detach().max()) < 1.0


def test_incompatible_options_fail_with_the_option_names():
    with pytest.raises(ValueError, match="solver=chebyshev.*TruncateResponse"):
        make_head(ChebyshevSolver(), TruncateResponse())
    with pytest.raises(ValueError, match="noise_gate"):
        make_head(ChebyshevSolver(), noise_gate=True)
    with pytest.raises(ValueError, match="solver=nystrom.*laplacian=unnormalized"):
        make_head(NystromSolver(), laplacian="unnormalized")
    with pytest.raises(ValueError, match="laplacian must be one of"):
        make_head(laplacian="normalized")


def test_bad_feature_maps_fail_at_the_first_step():
    head = make_head(k=16)
    with pytest.raises(ValueError, match="solver=dense with k=16 needs .* found N = 16"):
        head(torch.randn(1, 4, 4, 4, dtype=torch.float64))
    features = blocky_features()
    features[0, 0, 2, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite features"):
        make_head()(features)
    with pytest.raises(ValueError, match="max_nodes=16"):
        make_head(DenseSolver(k=2, max_nodes=16))(blocky_features())


def test_denoise_keeps_running_and_changes_the_graph():
    features = blocky_features()
    plain = make_head()
    denoised = make_head(denoise=True)
    _, aux_plain = plain(features)
    _, aux_denoised = denoised(features)
    assert not torch.allclose(aux_plain["graph"].weight, aux_denoised["graph"].weight)


def subspace_cosines(u: Tensor, v: Tensor) -> Tensor:
    """Cosines of the principal angles between the column spans of (B, N, k) u and v:
    all 1 when the spans agree, whatever the signs and rotations inside them."""
    qu, qv = torch.linalg.qr(u.double())[0], torch.linalg.qr(v.double())[0]
    return torch.linalg.svdvals(qu.transpose(-1, -2) @ qv)


@pytest.mark.parametrize("features_dtype", [torch.float32, torch.bfloat16])
def test_float32_under_bf16_autocast_matches_float32(features_dtype):
    # Under trainer.precision=bf16-mixed the backbone hands over bf16 features; the head
    # computes the spectrum in float32 from them, so the eigenpairs are those of a float32
    # run on the same (bf16-rounded) values.
    head = SpectralHead(4, 3, functools.partial(GridAffinity), DenseSolver(k=3), TemperResponse())
    features = blocky_features().to(features_dtype)
    reference, ref_aux = head(features.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux = head(features.clone().requires_grad_())
    assert aux["eigenvalues"].dtype == aux["eigenvectors"].dtype == torch.float32
    torch.testing.assert_close(aux["eigenvalues"], ref_aux["eigenvalues"], atol=1e-5, rtol=0)
    vectors, ref_vectors = (a["eigenvectors"].flatten(2).transpose(1, 2) for a in (aux, ref_aux))
    cosines = subspace_cosines(vectors, ref_vectors)
    torch.testing.assert_close(cosines, torch.ones_like(cosines), atol=1e-4, rtol=0)
    # Only the classifier ran in bf16: the logits agree to bf16 resolution.
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.02)
    head.zero_grad()
    logits.float().square().mean().backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


# ------------------------------------------------------------ fuzzed sign/basis invariance
#
# The deterministic test above rotates inside the degenerate eigenspaces of one grid.
# Here hypothesis draws the graphs (tests/ops/strategies.py: several components, isolated
# nodes, complete graphs, cycles and stars with exactly or nearly repeated eigenvalues,
# weights from 1e-8 to 1e8; or a kNN graph of features with duplicate rows), the
# Laplacian, the response and k, and compares the head run with its dense solver against
# the same head fed another valid eigenbasis: an independent float64 eigendecomposition
# with random signs and a random rotation inside every cluster of eigenvalues.
#
# Which k: the k lowest eigenvectors are only defined up to rotation when k falls at a
# cluster boundary. A k that splits a cluster selects an arbitrary part of it and the
# output may change for every response (h is not 0 there), so k is moved to the nearest
# boundary; the same holds for truncate's `keep`. Graphs whose spectrum is one cluster
# (all nodes isolated: L_sym = I) have no admissible k and are rejected.

CLUSTER_GAP = 1e-5  # eigenvalues closer than this (times λmax's bound) form one cluster


def eigenvalue_clusters(values: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """[start, stop) ranges of sorted ``values`` whose neighbours are within ``gap``."""
    starts = [0, *(i for i in range(1, len(values)) if values[i] - values[i - 1] > gap)]
    return list(zip(starts, [*starts[1:], len(values)], strict=True))


def dense_laplacian(adjacency: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(L, s): D - W for "unnormalized", else I - S W S with S = diag(s), s = d^-1/2 and 0
    at isolated nodes (d <= eps), whose rows are then identity rows."""
    d = adjacency.sum(-1)
    s = np.where(d > np.finfo(np.float64).eps, 1.0 / np.sqrt(np.maximum(d, 1e-300)), 0.0)
    if kind == "unnormalized":
        return np.diag(d) - adjacency, s
    return np.eye(len(d)) - s[:, None] * adjacency * s[None, :], s


class AnotherBasis(SpectralSolver):
    """The k lowest eigenpairs in another valid basis: numpy's eigh of the dense Laplacian,
    random signs, a random orthogonal rotation inside each eigenvalue cluster, then cut
    at k (which must not split a cluster); D^-1/2 U for random_walk."""

    name = "another_basis"

    def __init__(self, k: int, seed: int, gap: float) -> None:
        super().__init__(k)
        self.seed, self.gap = seed, gap

    def eigenpairs(self, graph, kind):
        k = self.k
        adjacency = to_dense(graph)[0].detach().numpy()
        lap, s = dense_laplacian(adjacency, kind)
        values, vectors = np.linalg.eigh(0.5 * (lap + lap.T))
        rng = np.random.default_rng(self.seed)
        vectors = vectors * rng.choice([-1.0, 1.0], size=len(values))
        for start, stop in eigenvalue_clusters(values, self.gap):
            rotation, _ = np.linalg.qr(rng.standard_normal((stop - start, stop - start)))
            vectors[:, start:stop] = vectors[:, start:stop] @ rotation
        if kind == "random_walk":
            vectors = s[:, None] * vectors
        values, vectors = values[None, :k], vectors[None, :, :k]
        return Eigenpairs(torch.from_numpy(values), torch.from_numpy(vectors))


class GivenGraph(PixelAffinity):
    """An affinity that ignores the features and returns a fixed graph."""

    uses_sigma = False

    def __init__(self, in_channels: int, graph) -> None:
        super().__init__(in_channels, metric="none")
        self.graph = graph

    def forward(self, features):
        return self.graph


@dataclass(frozen=True)
class HeadInput:
    """A drawn graph (``dense`` (N, N) adjacency, ``channels`` random feature channels),
    or drawn ``points`` (1, N, C) whose kNN graph (``knn`` neighbours) the head builds."""

    dense: np.ndarray | None = None
    channels: int = 0
    points: torch.Tensor | None = None
    knn: int = 0

    def build(self, seed: int) -> tuple[PixelAffinity, torch.Tensor]:
        """(affinity, features (1, C, 1, N))."""
        if self.points is not None:
            features = self.points.to(F64).transpose(1, 2).unsqueeze(2)
            affinity = KnnAffinity(features.shape[1], knn=self.knn, kernel="gaussian")
            return affinity.double(), features
        g = torch.Generator().manual_seed(seed)
        features = torch.randn(1, self.channels, 1, len(self.dense), generator=g, dtype=F64)
        graph = graph_from_dense(self.dense[None])
        graph = NeighborGraph(graph.index, graph.weight.to(F64))
        return GivenGraph(self.channels, graph), features


@st.composite
def head_inputs(draw) -> HeadInput:
    """A graph of tests/ops/strategies.py with random features, or a kNN graph of drawn
    features that repeat rows (and may hold zero rows)."""
    if draw(st.booleans()):
        return HeadInput(
            dense=draw(graph_cases(max_nodes=14)).dense, channels=draw(st.integers(1, 4))
        )
    points = draw(point_clouds(max_points=14))
    return HeadInput(points=points, knn=min(draw(st.integers(1, 4)), points.shape[1] - 1))


def nearest(options: list[int], target: int) -> int:
    return min(options, key=lambda option: (abs(option - target), option))


def check_head_sign_and_basis_invariance(
    inputs: HeadInput, laplacian: str, response_name: str, fraction: float, seed: int
) -> None:
    affinity, features = inputs.build(seed)
    num_nodes = features.shape[-1]
    with torch.no_grad():
        graph = affinity(features)
    scale = float(lambda_max_bound(graph, laplacian)[0]) or 1.0
    gap = CLUSTER_GAP * scale
    symmetric_kind = "unnormalized" if laplacian == "unnormalized" else "symmetric"
    spectrum = np.linalg.eigvalsh(dense_laplacian(to_dense(graph)[0].numpy(), symmetric_kind)[0])
    clusters = eigenvalue_clusters(spectrum, gap)
    boundaries = [start for start, _ in clusters[1:]]  # admissible k: 1 <= k <= N - 1
    assume(boundaries)
    k = nearest(boundaries, 1 + int(fraction * (num_nodes - 2)))
    rng = np.random.default_rng(seed)
    if response_name == "temper":
        response = TemperResponse(float(rng.uniform(0.0, 4.0)))
    elif response_name == "heat":
        response = HeatResponse(float(rng.uniform(0.0, 10.0)))
    elif response_name == "learned":
        response = LearnedResponse(hidden=4, order=4)
        g = torch.Generator().manual_seed(seed)
        for p in response.parameters():
            torch.nn.init.normal_(p, std=0.5, generator=g)
    else:
        keep = [b for b in boundaries if b <= k]
        response = TruncateResponse(keep=int(rng.choice(keep)) if rng.random() < 0.5 else None)
    torch.manual_seed(seed)
    head = SpectralHead(
        features.shape[1],
        3,
        affinity,
        DenseSolver(k=k),
        response.double(),
        laplacian,
        embed_dim=4,
        dtype="float64",
    ).double()
    with torch.no_grad():
        reference, ref_aux = head(features)
        head.solver = AnotherBasis(k, seed, gap)
        logits, aux = head(features)
    # |U_c Q diag(h_c) Qᵀ U_cᵀ - U_c diag(h_c) U_cᵀ| <= max h_c - min h_c on each cluster c
    # of the cut; for random_walk V h Vᵀ D = S U h Uᵀ S^-1 (S = D^-1/2 on connected nodes)
    # amplifies it by max s / min s; plus rounding. The two solvers' eigenvalues differ
    # by rounding (up to ε ||L||, 3e-8 for weights of 1e8), and h passes that on: the
    # responses' own difference max |h_other - h_ref| adds to the bound.
    h = ref_aux["response"][0].numpy()
    spread = sum(float(np.ptp(h[a:b])) for a, b in clusters if b <= k)
    spread += float(np.abs(aux["response"][0].numpy() - h).max())
    s = dense_laplacian(to_dense(graph)[0].numpy(), laplacian)[1]
    connected = s[s > 0]
    amplification = float(s.max() / connected.min()) if laplacian == "random_walk" else 1.0
    value = head.value(features).detach().flatten(2)[0]  # (E, N)
    bound = (spread + 1e-8 * max(1.0, float(h.max()))) * amplification
    bound *= float(value.norm(dim=-1).max())
    embedding_error = float((aux["embedding"] - ref_aux["embedding"]).abs().max())
    assert embedding_error <= bound, (embedding_error, bound, k, spectrum)
    filtered_weight = head.classifier.weight.detach()[:, features.shape[1] :, 0, 0]  # (K, E)
    logit_bound = bound * float(filtered_weight.abs().sum(-1).max())
    assert float((logits - reference).abs().max()) <= logit_bound + 1e-12


test_head_sign_and_basis_invariance_fuzzed = property_test(
    check_head_sign_and_basis_invariance,
    inputs=head_inputs(),
    laplacian=st.sampled_from(LAPLACIAN_KINDS),
    response_name=st.sampled_from(["temper", "heat", "learned", "truncate"]),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
