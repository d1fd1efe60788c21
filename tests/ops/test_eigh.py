"""eigh: forward against numpy, backward against gradcheck, torch, closed forms and oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cheeger.ops.backward_modes import (
    BACKWARD_MODES,
    DEFAULT_ORDER,
    GAP_MODES,
    coupling_matrix,
    gap_reciprocal,
    gap_reciprocal_relative_error,
    gap_reciprocal_sup,
    power_iteration_coupling,
)
from cheeger.ops.eigh import canonicalize_eigenvector_signs, eigh
from tests.ops.spectra import (
    component_laplacian,
    indicator_basis,
    random_symmetric,
    with_spectrum,
)

APPROXIMATE = [m for m in BACKWARD_MODES if m != "exact"]


def grad_of(a: torch.Tensor, loss, **kwargs) -> torch.Tensor:
    a = a.detach().clone().requires_grad_(True)
    values, vectors = eigh(a, **kwargs)
    (grad,) = torch.autograd.grad(loss(values, vectors), a)
    return grad


def linear_loss(weights_values: torch.Tensor, weights_vectors: torch.Tensor):
    """L = <w, λ> + <G, U>: gλ = w and gU = G exactly (signs are deterministic)."""
    return lambda values, vectors: (
        (weights_values * values).sum() + (weights_vectors * vectors).sum()
    )


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_forward_matches_numpy(k, largest, device64):
    a = random_symmetric(3, 7, seed=k)
    values, vectors = eigh(a.to(device64), k=k, largest=largest)
    assert values.shape == (3, k) and vectors.shape == (3, 7, k)
    assert vectors.device.type == device64
    values, vectors = values.cpu(), vectors.cpu()
    ref_values, ref_vectors = np.linalg.eigh(a.numpy())
    pick = slice(None, None, -1) if largest else slice(None)
    ref_values, ref_vectors = ref_values[:, pick][:, :k], ref_vectors[:, :, pick][:, :, :k]
    np.testing.assert_allclose(values.numpy(), ref_values, atol=1e-10, rtol=0)
    ours = vectors.numpy()
    for j in range(k):  # random matrices: simple spectrum, one projector per vector
        p = ours[:, :, j, None] * ours[:, None, :, j]
        q = ref_vectors[:, :, j, None] * ref_vectors[:, None, :, j]
        np.testing.assert_allclose(p, q, atol=1e-9, rtol=0)


def test_forward_float32_and_shapes():
    a = random_symmetric(2, 6, seed=11, dtype=torch.float32)
    values, vectors = eigh(a, k=2)
    assert values.dtype == vectors.dtype == torch.float32
    ref_values, ref_vectors = np.linalg.eigh(a.double().numpy())
    np.testing.assert_allclose(values.numpy(), ref_values[:, :2], atol=1e-5, rtol=0)
    proj = vectors @ vectors.transpose(-1, -2)
    ref = ref_vectors[:, :, :2] @ ref_vectors[:, :, :2].transpose(0, 2, 1)
    np.testing.assert_allclose(proj.numpy(), ref, atol=1e-4, rtol=0)
    single_values, single_vectors = eigh(a[1], k=2)
    assert single_values.shape == (2,) and single_vectors.shape == (6, 2)
    torch.testing.assert_close(single_vectors, vectors[1])
    nested_values, nested_vectors = eigh(a.reshape(1, 2, 6, 6), k=2)
    assert nested_values.shape == (1, 2, 2) and nested_vectors.shape == (1, 2, 6, 2)


def test_sign_convention_is_max_abs_positive_and_deterministic():
    a = random_symmetric(4, 8, seed=3)
    values, vectors = eigh(a, k=5)
    rows = vectors.abs().argmax(-2, keepdim=True)
    assert torch.all(vectors.gather(-2, rows) > 0)
    again = eigh(a, k=5)
    assert torch.equal(values, again[0]) and torch.equal(vectors, again[1])
    # The convention does not depend on the signs the solver happened to produce.
    flips = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=a.dtype)
    assert torch.equal(canonicalize_eigenvector_signs(vectors * flips), vectors)
    raw_values, raw_vectors = eigh(a, k=5, sign=None)
    torch.testing.assert_close(raw_vectors, torch.linalg.eigh(a)[1][..., :5], rtol=0, atol=0)


def test_sign_ties_resolved_by_first_entry():
    lap = torch.from_numpy(component_laplacian([6], seed=0)[0])  # connected: constant null vector
    _, vectors = eigh(lap, k=1)
    np.testing.assert_allclose(vectors[:, 0].numpy(), np.full(6, 1 / np.sqrt(6)), atol=1e-12)
    tied = torch.tensor([[0.5, -0.5], [-0.5, 0.5], [0.5, 0.5], [-0.5, -0.5]], dtype=torch.float64)
    fixed = canonicalize_eigenvector_signs(tied)
    assert fixed[0].tolist() == [0.5, 0.5]


# ---------------------------------------------------------------- gradcheck


def symmetrised(fn):
    """gradcheck perturbs X entrywise; eigh must see a symmetric matrix."""
    return lambda x: fn(0.5 * (x + x.transpose(-1, -2)))


@pytest.mark.parametrize(("k", "largest"), [(5, False), (3, False), (2, True)])
def test_gradcheck_exact_values_and_vectors(k, largest):
    x = random_symmetric(2, 5, seed=20 + k).requires_grad_(True)
    fn = symmetrised(lambda a: eigh(a, k=k, largest=largest, backward="exact"))
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("mode", BACKWARD_MODES)
def test_gradcheck_every_mode_on_eigenvalue_only_loss(mode):
    x, _ = with_spectrum([0.0, 0.0, 1.0, 2.0, 2.0], seed=1)  # F is not used: even degenerate
    x = (x + 0.01 * random_symmetric(1, 5, seed=2)[0]).unsqueeze(0).requires_grad_(True)
    fn = symmetrised(lambda a: eigh(a, k=3, backward=mode)[0])
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("topk", {"k": 5, "eps": 0.0}),  # k = N: nothing to drop
        ("lorentzian", {"k": 3, "eps": 0.0}),
        ("clamp", {"k": 3, "eps": 0.05}),  # exact where every gap >= eps
        ("taylor", {"k": 3, "eps": 0.0}),
        ("pade", {"k": 3, "eps": 0.0}),
        # ratios μ_i/μ_j <= 7.01/8.01 and 400 steps: relative error <= 1e-23
        ("power_iteration", {"k": 3, "eps": 0.01, "order": 400}),
    ],
)
def test_gradcheck_modes_where_they_are_exact(mode, kwargs):
    a, _ = with_spectrum([0.0, 1.0, 2.0, 4.0, 8.0], seed=4)
    x = a.unsqueeze(0).requires_grad_(True)
    fn = symmetrised(lambda m: eigh(m, backward=mode, **kwargs))
    assert torch.autograd.gradcheck(fn, (x,))


# ---------------------------------------------------------------- agreement with torch and oracles


@pytest.mark.parametrize(("k", "largest"), [(8, False), (3, False), (3, True)])
def test_exact_equals_torch_linalg_eigh_gradient(k, largest):
    a = random_symmetric(2, 8, seed=30 + k)
    g = torch.Generator().manual_seed(0)
    w_values = torch.randn(2, k, generator=g, dtype=a.dtype)
    w_vectors = torch.randn(2, 8, k, generator=g, dtype=a.dtype)

    def loss(values, vectors):  # sign-invariant in the vectors
        return (w_values * values).sum() + (w_vectors * vectors.square()).sum()

    ours = grad_of(a, loss, k=k, largest=largest, backward="exact")
    leaf = a.clone().requires_grad_(True)
    values, vectors = torch.linalg.eigh(leaf)
    if largest:
        values, vectors = values.flip(-1), vectors.flip(-1)
    (theirs,) = torch.autograd.grad(loss(values[..., :k], vectors[..., :k]), leaf)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_topk_equals_rayleigh_ritz_in_the_frozen_subspace():
    """topk is the gradient of eig(U_kᵀ A U_k) with U_k held constant (what it keeps)."""
    a = random_symmetric(1, 7, seed=40)[0]
    k = 3
    g = torch.Generator().manual_seed(1)
    w_values = torch.randn(k, generator=g, dtype=a.dtype)
    w_vectors = torch.randn(7, k, generator=g, dtype=a.dtype)

    def loss(values, vectors):
        return (w_values * values).sum() + (w_vectors * vectors.square()).sum()

    ours = grad_of(a, loss, k=k, backward="topk", eps=0.0)
    basis = torch.linalg.eigh(a)[1][:, :k]
    leaf = a.clone().requires_grad_(True)
    small_values, small_vectors = torch.linalg.eigh(basis.T @ leaf @ basis)
    (oracle,) = torch.autograd.grad(loss(small_values, basis @ small_vectors), leaf)
    torch.testing.assert_close(ours, 0.5 * (oracle + oracle.T), rtol=0, atol=1e-10)
    full = grad_of(a, loss, k=k, backward="exact")
    assert (ours - full).norm() > 0.1 * full.norm()  # and it really drops something


def unrolled_power_iteration_grad(a, k, largest, eps, steps, loss):
    """Autograd through the deflated power iteration that power_iteration describes."""
    n = a.shape[-1]
    leaf = a.clone().requires_grad_(True)
    lam, u = torch.linalg.eigh(a)
    if largest:
        lam, u = lam.flip(-1), u.flip(-1)
    u = canonicalize_eigenvector_signs(u)
    sigma, far = (1.0, lam.min()) if largest else (-1.0, lam.max())
    eye = torch.eye(n, dtype=a.dtype)
    m = sigma * (leaf - far * eye) + eps * eye
    vectors, rayleigh = [], []
    for j in range(k):
        v = u[:, j]
        for _ in range(steps):
            w = m @ v
            for vm, rm in zip(vectors, rayleigh, strict=False):
                w = w - rm * vm * (vm @ v)
            v = w / w.norm()
        vectors.append(v)
        rayleigh.append(v @ m @ v)
    values = torch.stack([v @ leaf @ v for v in vectors])
    (grad,) = torch.autograd.grad(loss(values, torch.stack(vectors, -1)), leaf)
    return 0.5 * (grad + grad.T)


@pytest.mark.parametrize("spectrum", ["simple", "degenerate"])
@pytest.mark.parametrize(("k", "largest", "steps"), [(2, False, 1), (4, False, 5), (3, True, 12)])
def test_power_iteration_equals_autograd_through_power_iteration(spectrum, k, largest, steps):
    values = [0.0, 0.3, 0.7, 1.0, 1.6, 2.0] if spectrum == "simple" else [0, 0, 0, 1, 2, 2]
    a, _ = with_spectrum([float(v) for v in values], seed=5)
    g = torch.Generator().manual_seed(2)
    w_values = torch.randn(k, generator=g, dtype=a.dtype)
    w_vectors = torch.randn(6, k, generator=g, dtype=a.dtype)
    loss = linear_loss(w_values, w_vectors)
    ours = grad_of(a, loss, k=k, largest=largest, backward="power_iteration", eps=0.05, order=steps)
    oracle = unrolled_power_iteration_grad(a, k, largest, 0.05, steps, loss)
    torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-9 * max(1.0, oracle.abs().max()))


# ---------------------------------------------------------------- accuracy of the approximations


def test_gap_reciprocal_matches_its_closed_form_errors_and_bounds():
    size = torch.logspace(-9, 1, 400, dtype=torch.float64)
    delta = torch.cat([-size.flip(0), torch.zeros(1, dtype=torch.float64), size])
    for mode in [*GAP_MODES, "topk"]:
        for eps, order in [(1e-3, None), (0.1, 1), (1e-4, 6)]:
            f = gap_reciprocal(delta, mode, eps, order)
            assert torch.equal(f, -gap_reciprocal(-delta, mode, eps, order))  # odd
            if mode == "exact":
                assert torch.equal(f, 1.0 / delta)
                continue
            assert torch.isfinite(f).all() and f[size.numel()] == 0.0
            assert f.abs().max() <= gap_reciprocal_sup(mode, eps, order) * (1 + 1e-12)
            measured = 1.0 - delta * f
            predicted = gap_reciprocal_relative_error(delta, mode, eps, order)
            torch.testing.assert_close(measured, predicted, rtol=0, atol=1e-12)
            assert measured.min() >= -1e-15 and measured.max() <= 1.0


def test_gap_reciprocal_sup_is_attained_near_zero_gap():
    eps = 1e-3
    near = torch.tensor([eps, 1e-9 * eps], dtype=torch.float64)
    assert gap_reciprocal(near[:1], "lorentzian", eps).item() == pytest.approx(0.5 / eps)
    for mode, sup in [("clamp", 1 / eps), ("taylor", 4 / eps), ("pade", 16 / eps)]:
        value = gap_reciprocal(near[1:], mode, eps).item()
        assert value == pytest.approx(sup, rel=1e-6)
        assert gap_reciprocal_sup(mode, eps) == pytest.approx(sup)


@settings(max_examples=60, deadline=None)
@given(
    delta=st.floats(-1e3, 1e3, allow_nan=False),
    eps=st.floats(1e-8, 10.0),
    order=st.integers(1, 12),
    mode=st.sampled_from(["lorentzian", "clamp", "taylor", "pade"]),
)
def test_gap_reciprocal_properties_fuzz(delta, eps, order, mode):
    d = torch.tensor([delta], dtype=torch.float64)
    f = gap_reciprocal(d, mode, eps, order).item()
    assert math.isfinite(f)
    assert abs(f) <= gap_reciprocal_sup(mode, eps, order) * (1 + 1e-9)
    assert f * delta >= 0.0  # same sign as 1/Δ
    assert f * delta <= 1.0 + 1e-12  # never larger than |1/Δ|


# Relative error of F for gaps >= 0.5 at eps = 1e-3 (closed forms, checked above):
# lorentzian (ε/Δ)² = 4e-6, clamp 0, taylor r⁴ = 1.6e-11, pade 4q⁴ = 2.5e-13.
PAIR_BOUND = {
    mode: gap_reciprocal_relative_error(torch.tensor(0.5, dtype=torch.float64), mode, 1e-3).item()
    for mode in ["lorentzian", "clamp", "taylor", "pade"]
}


def test_pair_bounds_are_the_stated_numbers():
    assert PAIR_BOUND["lorentzian"] == pytest.approx(4e-6, rel=1e-5)
    assert PAIR_BOUND["clamp"] == 0.0
    assert PAIR_BOUND["taylor"] == pytest.approx((1e-3 / 0.501) ** 4)
    assert 2.4e-13 < PAIR_BOUND["pade"] < 2.6e-13


@pytest.mark.parametrize("mode", list(PAIR_BOUND))
@pytest.mark.parametrize("k", [6, 3])
def test_gap_modes_close_to_exact_at_large_gaps(mode, k):
    a, q = with_spectrum([-1.0, -0.5, 0.2, 1.0, 2.0, 3.5], seed=7)  # every gap >= 0.5
    g = torch.Generator().manual_seed(3)
    w_values, w_vectors = torch.randn(k, generator=g), torch.randn(6, k, generator=g)
    loss = linear_loss(w_values.double(), w_vectors.double())
    exact = grad_of(a, loss, k=k, backward="exact")
    approx = grad_of(a, loss, k=k, backward=mode, eps=1e-3)
    lam, u = torch.linalg.eigh(a)
    u = torch.cat([canonicalize_eigenvector_signs(u[:, :k]), u[:, k:]], -1)
    f_exact = coupling_matrix(lam, k, "exact")
    bound = PAIR_BOUND[mode] * (f_exact * (u.T @ w_vectors.double())).norm()
    assert (approx - exact).norm() <= bound * (1 + 1e-6) + 1e-13
    assert (approx - exact).norm() <= PAIR_BOUND[mode] * 10 * exact.norm() + 1e-13


def test_power_iteration_close_to_exact_with_enough_steps():
    a, _ = with_spectrum([0.0, 1.0, 2.0, 4.0, 8.0, 9.0], seed=8)
    k, eps, steps = 3, 1e-2, 150
    loss = linear_loss(torch.ones(k, dtype=a.dtype), torch.ones(6, k, dtype=a.dtype))
    exact = grad_of(a, loss, k=k, backward="exact")
    approx = grad_of(a, loss, k=k, backward="power_iteration", eps=eps, order=steps)
    mu = 9.0 - torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0, 9.0]) + eps
    worst_ratio = (mu[1:] / mu[:-1]).max().item()  # adjacent shifted eigenvalues
    bound = worst_ratio ** (steps - 1)
    assert bound < 1e-7
    assert (approx - exact).norm() <= bound * 10 * exact.norm()


# ---------------------------------------------------------------- degenerate spectra


def degenerate_cases():
    spectra = [
        [0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 3.0],
        [-1.0, -1.0, 0.5, 0.5, 0.5, 0.5, 2.0],
        [1.0] * 7,
    ]
    for i, spectrum in enumerate(spectra):
        yield f"repeated{i}", with_spectrum(spectrum, seed=10 + i)[0]
    for i, sizes in enumerate([[3, 4], [2, 3, 2], [3, 2, 1, 1]]):
        yield f"laplacian{i}", torch.from_numpy(component_laplacian(sizes, seed=20 + i)[0])


@pytest.mark.parametrize("mode", APPROXIMATE)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_degenerate_gradients_are_finite_and_within_the_stated_bound(mode, dtype):
    eps = 1e-3
    for name, a in degenerate_cases():
        for k, largest in [(7, False), (4, False), (3, True)]:
            g = torch.Generator().manual_seed(k)
            w_values = torch.randn(k, generator=g, dtype=torch.float64).to(dtype)
            w_vectors = torch.randn(7, k, generator=g, dtype=torch.float64).to(dtype)
            loss = linear_loss(w_values, w_vectors)
            grad = grad_of(a.to(dtype), loss, k=k, largest=largest, backward=mode, eps=eps)
            # ||gA||_F <= ||gλ|| + sup|F| · ||gU||_F  (U orthogonal, sym is a contraction)
            bound = w_values.norm() + gap_reciprocal_sup(mode, eps) * w_vectors.norm()
            assert torch.isfinite(grad).all(), (name, k)
            assert grad.norm() <= bound * (1 + 1e-4), (name, k)


def test_exact_mode_is_unbounded_at_repeated_eigenvalues():
    """The degenerate cases above really do break the exact backward (so they test something)."""
    for name, a in degenerate_cases():
        if name == "repeated2":  # A = I: every coupling is rounding noise; skip
            continue
        loss = linear_loss(torch.zeros(4, dtype=a.dtype), torch.ones(7, 4, dtype=a.dtype))
        grad = grad_of(a, loss, k=4, backward="exact")
        assert not torch.isfinite(grad).all() or grad.abs().max() > 1e8, name


def projector_loss(block: int, c: torch.Tensor):
    """<U_b U_bᵀ, C> over the first `block` returned vectors: rotation invariant in the block."""
    return lambda values, vectors: (
        (vectors[..., :block] @ vectors[..., :block].transpose(-1, -2)) * c
    ).sum()


def analytic_projector_grad(eigvecs: np.ndarray, eigvals: np.ndarray, block: int, c: np.ndarray):
    """∂<P, C>/∂A = 2 sym(R C P), R = Σ_{b outside} u_b u_bᵀ/(λ_0 - λ_b), from known U, λ."""
    p = eigvecs[:, :block] @ eigvecs[:, :block].T
    outside = eigvecs[:, block:]
    r = outside @ np.diag(1.0 / (eigvals[0] - eigvals[block:])) @ outside.T
    g = r @ c @ p
    return g + g.T


def invariant_cases():
    """(name, A, U, λ, block): the block is the eigenspace of the smallest eigenvalue."""
    spectrum = np.array([0.0, 0.0, 0.0, 1.0, 1.5, 2.0, 3.0])
    a, q = with_spectrum(spectrum, seed=30)
    yield "repeated", a, q, spectrum, 3
    sizes = [3, 2, 2]
    lap, labels = component_laplacian(sizes, seed=31)
    indicator = indicator_basis(labels)
    values, vectors = np.linalg.eigh(lap)  # only the non-null part is taken from numpy
    yield "laplacian", torch.from_numpy(lap), np.hstack([indicator, vectors[:, 3:]]), values, 3


@pytest.mark.parametrize("mode", ["exact-at-split", "lorentzian", "clamp", "taylor", "pade"])
def test_rotation_invariant_loss_has_the_analytic_gradient(mode):
    eps = 1e-3
    for name, a, u, lam, block in invariant_cases():
        c = np.random.default_rng(0).standard_normal((7, 7))
        c = c + c.T
        analytic = analytic_projector_grad(u, lam, block, c)
        loss = projector_loss(block, torch.from_numpy(c))
        if mode == "exact-at-split":  # exact mode after splitting the block by 1e-4
            split = torch.from_numpy(
                u @ np.diag(lam + 1e-4 * np.arange(7) * (np.arange(7) < block)) @ u.T
            )
            grad = grad_of(split, loss, k=4, backward="exact")
            tol = 1e-3 * np.abs(analytic).max()
        else:
            grad = grad_of(a, loss, k=4, backward=mode, eps=eps)
            gap = np.diff(lam)[block - 1]  # smallest gap from the block to the rest
            rel = gap_reciprocal_relative_error(torch.tensor(gap), mode, eps).item()
            tol = 20 * rel * np.abs(analytic).max() + 1e-9
        np.testing.assert_allclose(grad.numpy(), analytic, atol=tol, rtol=0, err_msg=name)


def test_topk_drops_the_whole_projector_gradient_and_power_iteration_deviation_is_bounded():
    for _, a, u, lam, block in invariant_cases():
        c = np.random.default_rng(1).standard_normal((7, 7))
        c = c + c.T
        analytic = analytic_projector_grad(u, lam, block, c)
        loss = projector_loss(block, torch.from_numpy(c))
        topk = grad_of(a, loss, k=block, backward="topk", eps=1e-3)
        assert topk.abs().max() < 1e-9 * np.abs(analytic).max()
        # power iteration: in-block F is not antisymmetric, F_ij + F_ji = -1/μ_i at ties
        steps, eps = 2000, 1e-3
        pi = grad_of(a, loss, k=block, backward="power_iteration", eps=eps, order=steps)
        mu = lam.max() - lam + eps
        s_block = 2 * u[:, :block].T @ c @ u[:, :block]
        in_block = np.linalg.norm(s_block) / (2 * mu[0])
        out_ratio = (mu[block] / mu[block - 1]) ** (steps - 1)
        deviation = np.linalg.norm(pi.numpy() - analytic)
        assert deviation <= in_block + out_ratio * np.linalg.norm(analytic) * 10 + 1e-9


# ---------------------------------------------------------------- float32, batching, bad input


def test_float32_backward_matches_float64():
    a = random_symmetric(2, 6, seed=50)
    loss = linear_loss(torch.ones(3, dtype=a.dtype), torch.ones(6, 3, dtype=a.dtype))
    loss32 = linear_loss(torch.ones(3), torch.ones(6, 3))
    for mode in BACKWARD_MODES:
        g64 = grad_of(a, loss, k=3, backward=mode)
        g32 = grad_of(a.float(), loss32, k=3, backward=mode)
        assert g32.dtype == torch.float32
        torch.testing.assert_close(g32.double(), g64, rtol=0, atol=2e-4 * g64.abs().max())


def test_batched_gradient_equals_per_matrix_gradient():
    a = random_symmetric(3, 5, seed=60)
    w = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(0), dtype=a.dtype)

    def loss(values, vectors):
        return values.sum() + (w[: vectors.shape[0]] * vectors).sum()

    batched = grad_of(a, loss, k=2, backward="taylor")
    for b in range(3):

        def single(values, vectors, b=b):
            return values.sum() + (w[b] * vectors).sum()

        torch.testing.assert_close(batched[b], grad_of(a[b], single, k=2, backward="taylor"))


def test_default_orders_are_documented_values():
    assert DEFAULT_ORDER == {"taylor": 3, "pade": 2, "power_iteration": 20}
    lam = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    f = power_iteration_coupling(lam, 2, False, 0.0, 1)
    # one step: later rows get 1/μ_j (σ = -1), earlier rows get 0
    mu = 3.0 - lam
    expected = torch.tensor([[0.0, 0.0], [-1 / mu[0], 0.0], [-1 / mu[0], -1 / mu[1]]])
    torch.testing.assert_close(f, expected.double())


@pytest.mark.parametrize(
    ("bad", "kwargs", "message"),
    [
        (torch.zeros(3, 4, dtype=torch.float64), {}, r"A must have shape .*square"),
        (torch.zeros(4, dtype=torch.float64), {}, r"A must have shape"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), {}, r"A must be symmetric: max \|A - A\^T\| = 2"),
        (torch.tensor([[float("inf"), 0.0], [0.0, 1.0]]), {}, "A must be finite"),
        (torch.eye(2, dtype=torch.int32), {}, "A must be float32 or float64"),
        (torch.eye(3), {"k": 0}, r"k must be an int in \[1, N\] = \[1, 3\]; found 0"),
        (torch.eye(3), {"k": 4}, r"k must be an int in \[1, N\] = \[1, 3\]; found 4"),
        (torch.eye(3), {"k": 1.5}, "k must be an int"),
        (torch.eye(3), {"k": True}, "k must be an int"),
        (torch.eye(3), {"backward": "svd"}, "backward must be one of exact, lorentzian, clamp"),
        (torch.eye(3), {"eps": -1.0}, "eps must be a finite number >= 0"),
        (torch.eye(3), {"eps": float("nan")}, "eps must be"),
        (torch.eye(3), {"backward": "taylor", "order": 0}, "order must be an int >= 1"),
        (torch.eye(3), {"order": 2.0}, "order must be an int"),
        (torch.eye(3), {"sign": "positive_first"}, "sign must be one of"),
        (torch.eye(3), {"largest": 1}, "largest must be a bool"),
    ],
)
def test_bad_input_raises_naming_the_argument(bad, kwargs, message):
    with pytest.raises(ValueError, match=message):
        eigh(bad, **kwargs)


def test_gap_reciprocal_rejects_unknown_and_non_gap_modes():
    d = torch.ones(2)
    with pytest.raises(ValueError, match="backward must be one of"):
        gap_reciprocal(d, "cauchy")
    with pytest.raises(ValueError, match="power_iteration_coupling"):
        gap_reciprocal(d, "power_iteration")
    with pytest.raises(TypeError, match="A must be a torch.Tensor"):
        eigh(np.eye(2))
