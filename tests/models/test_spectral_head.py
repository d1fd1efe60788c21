"""SpectralHead: invariance, solver agreement, gradients, bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import Tensor

from cheeger.models.affinity import GridAffinity, KnnAffinity
from cheeger.models.response import LearnedResponse, TemperResponse, TruncateResponse
from cheeger.models.solvers import (
    ChebyshevSolver,
    DenseSolver,
    NystromSolver,
    PartialSolver,
    SpectralSolver,
)
from cheeger.models.spectral_head import SpectralHead
from cheeger.ops.chebyshev import exact_spectral_filter
from cheeger.ops.laplacian import laplacian_to_dense


def make_head(solver=None, response=None, affinity=None, k=6, channels=4, classes=3, **kwargs):
    torch.manual_seed(0)
    head = SpectralHead(
        channels,
        classes,
        affinity or functools.partial(GridAffinity, radius=1),
        solver or DenseSolver(),
        response or TemperResponse(1.0),
        k=k,
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
        self.solver, self.seed, self.tol = solver, seed, tol
        self.blocks_rotated = 0

    def eigenpairs(self, graph, k, kind, features, sigma):
        values, vectors = self.solver.eigenpairs(graph, k, kind, features, sigma)
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
        return values, vectors


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
    head = make_head(DenseSolver(), response, k=10)
    reference, _ = head(features, (6, 6))
    wrapped = FlipRotate(DenseSolver(), seed=3)
    head.solver = wrapped
    flipped, aux = head(features, (6, 6))
    assert wrapped.blocks_rotated >= 2  # the spectrum really was degenerate
    # The eigenvectors changed, the logits did not.
    assert not torch.allclose(aux["eigenvectors"], head_eigenvectors(features, head))
    torch.testing.assert_close(flipped, reference, atol=1e-10, rtol=0)


def head_eigenvectors(features, head):
    head.solver, saved = DenseSolver(), head.solver
    _, aux = head(features, tuple(features.shape[-2:]))
    head.solver = saved
    return aux["eigenvectors"]


def test_filter_with_eigenpairs_is_the_projector_formula():
    head = make_head()
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(2, 20, 4, generator=g, dtype=torch.float64))
    values = torch.tensor([[0.0, 0.1, 0.5, 1.0], [0.0, 0.2, 0.2, 1.5]], dtype=torch.float64)
    signal = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    lambda_max = torch.full((2,), 2.0, dtype=torch.float64)
    filtered, weights = head.filter_with_eigenpairs(values, basis, signal, lambda_max)
    h = 1.0 - values / 2.0
    expected = torch.stack([basis[b] @ torch.diag(h[b]) @ basis[b].T @ signal[b] for b in range(2)])
    torch.testing.assert_close(filtered, expected)
    torch.testing.assert_close(weights, h)


def test_lanczos_and_nystrom_full_match_dense():
    features = blocky_features()
    dense_head = make_head(DenseSolver(), k=4)
    reference, ref_aux = dense_head(features, (8, 8))
    lanczos_head = make_head(PartialSolver(tol=1e-10), k=4)
    lanczos_head.load_state_dict(dense_head.state_dict())
    logits, aux = lanczos_head(features, (8, 8))
    torch.testing.assert_close(aux["eigenvalues"], ref_aux["eigenvalues"], atol=1e-8, rtol=0)
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)


def test_nystrom_with_all_landmarks_uses_the_dense_kernel_spectrum():
    features = blocky_features()
    head = make_head(NystromSolver(num_landmarks=64), k=4)
    _, aux = head(features, (8, 8))
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
    logits, aux = head(features, (8, 8))
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
        "dense": DenseSolver(),
        "lanczos": PartialSolver(),
        "nystrom": NystromSolver(num_landmarks=32),
        "chebyshev": ChebyshevSolver(order=8),
    }
    head = make_head(solvers[solver], LearnedResponse(), k=4, noise_gate=solver != "chebyshev")
    features = blocky_features().requires_grad_(True)
    target = torch.randint(0, 3, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    logits, _ = head(features, (8, 8))
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
        PartialSolver(), affinity=functools.partial(KnnAffinity, knn=5, kernel="gaussian"), k=4
    )
    logits, aux = head(blocky_features(), (16, 16))
    assert logits.shape == (1, 3, 16, 16)
    assert aux["graph"].num_nodes == 64  # one node per feature pixel: no pooling
    assert aux["eigenvectors"].shape == (1, 4, 8, 8)


def test_noise_energy_is_a_share_and_the_gate_lowers_noise_directions():
    head = make_head(DenseSolver(), TruncateResponse(), k=8)
    g = torch.Generator().manual_seed(0)
    _, aux = head(torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), (8, 8))
    assert 0.0 <= float(aux["noise_energy"]) <= 1.0
    gated = make_head(DenseSolver(), TruncateResponse(), k=8, noise_gate=True)
    _, gated_aux = gated(torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), (8, 8))
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
    with pytest.raises(ValueError, match="k=16.*feature map is \\(4, 4\\) = 16 pixels"):
        head(torch.randn(1, 4, 4, 4, dtype=torch.float64), (4, 4))
    features = blocky_features()
    features[0, 0, 2, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite features"):
        make_head()(features, (8, 8))
    with pytest.raises(ValueError, match="max_nodes=16"):
        make_head(DenseSolver(max_nodes=16), k=2)(blocky_features(), (8, 8))


def test_denoise_keeps_running_and_changes_the_graph():
    features = blocky_features()
    plain = make_head()
    denoised = make_head(denoise=True)
    _, aux_plain = plain(features, (8, 8))
    _, aux_denoised = denoised(features, (8, 8))
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
    head = SpectralHead(4, 3, functools.partial(GridAffinity), DenseSolver(), TemperResponse(), k=3)
    features = blocky_features().to(features_dtype)
    reference, ref_aux = head(features.float(), (8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux = head(features.clone().requires_grad_(), (8, 8))
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
