"""Chebyshev and exact spectral filters against dense numpy eigendecompositions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev as npcheb

from cheeger.ops.chebyshev import (
    chebyshev_coefficients,
    chebyshev_filter,
    chebyshev_nodes,
    chebyshev_response,
)
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.laplacian import LAPLACIAN_KINDS, laplacian_to_dense
from tests.ops.spectra import graph_from_dense
from tests.ops.spectral_reference import exact_spectral_filter, spectral_filter

DTYPE = torch.float64


def random_weights(rng, batch: int, n: int, isolated: tuple[int, ...] = ()) -> np.ndarray:
    """Dense symmetric (B, N, N) weights, about half the pairs joined, no self loops."""
    dense = rng.uniform(0.1, 1.0, (batch, n, n)) * (rng.random((batch, n, n)) < 0.5)
    dense = np.triu(dense, 1)
    dense = dense + dense.transpose(0, 2, 1)
    for node in isolated:
        dense[:, node, :] = dense[:, :, node] = 0.0
    return dense


def dense_laplacian(dense: np.ndarray, kind: str) -> np.ndarray:
    """L of each batch element with numpy (isolated nodes: identity rows when normalised)."""
    deg = dense.sum(-1)
    eye = np.eye(dense.shape[-1])
    if kind == "unnormalized":
        return np.stack([np.diag(d) - w for d, w in zip(deg, dense, strict=True)])
    safe = np.where(deg > 0, deg, 1.0)
    if kind == "symmetric":
        s = np.where(deg > 0, safe**-0.5, 0.0)
        return eye - s[:, :, None] * dense * s[:, None, :]
    s = np.where(deg > 0, 1.0 / safe, 0.0)
    return eye - s[:, :, None] * dense


def dense_matrix_function(lap: np.ndarray, h, kind: str) -> np.ndarray:
    """h(L) by an eigendecomposition: eigh for symmetric L, eig (real spectrum) for L_rw."""
    if kind == "random_walk":
        values, vectors = np.linalg.eig(lap)
        values, vectors = values.real, vectors.real
        return vectors @ np.diag(h(values)) @ np.linalg.inv(vectors)
    values, vectors = np.linalg.eigh(lap)
    return vectors @ np.diag(h(values)) @ vectors.T


def lambda_max_of(dense: np.ndarray, kind: str) -> np.ndarray:
    """The default interval end of chebyshev_filter: 2, or 2 max d (Gershgorin)."""
    if kind == "unnormalized":
        return 2.0 * dense.sum(-1).max(-1)
    return np.full(dense.shape[0], 2.0)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ---------------------------------------------------------------- polynomial filters


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
@pytest.mark.parametrize("layout", ["shared", "per_channel", "per_batch_channel"])
def test_filter_equals_dense_polynomial(rng, kind, layout, device64):
    batch, n, channels, order = 2, 11, 3, 7
    dense = random_weights(rng, batch, n, isolated=(4,))
    graph = graph_from_dense(dense)
    graph = type(graph)(graph.index.to(device64), graph.weight.to(device64))
    x = rng.standard_normal((batch, n, channels))
    shape = {"shared": (order,), "per_channel": (order, channels)}.get(
        layout, (batch, order, channels)
    )
    theta = rng.standard_normal(shape)
    x_on, theta_on = torch.from_numpy(x).to(device64), torch.from_numpy(theta).to(device64)
    out = chebyshev_filter(graph, x_on, theta_on, kind)
    assert out.device.type == device64
    out = out.cpu().numpy()

    lap = dense_laplacian(dense, kind)
    lmax = lambda_max_of(dense, kind)
    for b in range(batch):
        for c in range(channels):
            if layout == "shared":
                coef = theta
            elif layout == "per_channel":
                coef = theta[:, c]
            else:
                coef = theta[b, :, c]

            def h(lam, coef=coef, b=b):
                return npcheb.chebval(2.0 * lam / lmax[b] - 1.0, coef)

            expected = dense_matrix_function(lap[b], h, kind) @ x[b, :, c]
            np.testing.assert_allclose(out[b, :, c], expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_low_orders_by_hand(rng, order):
    dense = random_weights(rng, 1, 6)
    graph = graph_from_dense(dense)
    x = torch.from_numpy(rng.standard_normal((1, 6, 2)))
    theta = torch.tensor([0.5, -1.5, 2.0][:order], dtype=DTYPE)
    lap = torch.from_numpy(dense_laplacian(dense, "symmetric"))
    rescaled = lap - torch.eye(6, dtype=DTYPE)  # 2 L / 2 - I
    terms = [x, rescaled @ x, 2 * rescaled @ (rescaled @ x) - x]
    expected = sum(t * c for t, c in zip(terms[:order], theta, strict=True))
    torch.testing.assert_close(chebyshev_filter(graph, x, theta), expected, atol=1e-12, rtol=0)


def test_lambda_max_argument_and_batch_independence(rng):
    dense = random_weights(rng, 3, 9)
    graph = graph_from_dense(dense)
    x = torch.from_numpy(rng.standard_normal((3, 9, 2)))
    theta = torch.from_numpy(rng.standard_normal(5))
    lmax = torch.tensor([1.5, 2.0, 3.0], dtype=DTYPE)
    out = chebyshev_filter(graph, x, theta, "unnormalized", lambda_max=lmax)
    lap = dense_laplacian(dense, "unnormalized")
    for b in range(3):
        # The matrix polynomial by its own recurrence on dense matrices.
        rescaled = 2.0 * lap[b] / float(lmax[b]) - np.eye(9)
        t_prev, t_curr = np.eye(9), rescaled
        poly = theta[0].item() * t_prev + theta[1].item() * t_curr
        for k in range(2, 5):
            t_prev, t_curr = t_curr, 2 * rescaled @ t_curr - t_prev
            poly += theta[k].item() * t_curr
        np.testing.assert_allclose(out[b].numpy(), poly @ x[b].numpy(), atol=1e-10, rtol=0)
    # A scalar lambda_max equals the same value repeated over the batch.
    scalar = chebyshev_filter(graph, x, theta, "symmetric", lambda_max=1.7)
    vector = chebyshev_filter(
        graph, x, theta, "symmetric", lambda_max=torch.full((3,), 1.7, dtype=DTYPE)
    )
    torch.testing.assert_close(scalar, vector, atol=0, rtol=0)


# ---------------------------------------------------------------- coefficients and response


def test_response_matches_numpy_chebval(rng):
    theta = rng.standard_normal((6, 2))
    lam = rng.uniform(0, 3.0, (4, 5))
    out = chebyshev_response(torch.from_numpy(theta), torch.from_numpy(lam), 3.0).numpy()
    assert out.shape == (4, 5, 2)
    for c in range(2):
        np.testing.assert_allclose(
            out[..., c], npcheb.chebval(2 * lam / 3.0 - 1, theta[:, c]), atol=1e-12
        )
    per_batch = rng.standard_normal((4, 6, 1))
    lmax = np.array([1.0, 2.0, 3.0, 4.0])
    got = chebyshev_response(
        torch.from_numpy(per_batch), torch.from_numpy(lam), torch.from_numpy(lmax)
    ).numpy()
    for b in range(4):
        expected = npcheb.chebval(2 * lam[b] / lmax[b] - 1, per_batch[b, :, 0])
        np.testing.assert_allclose(got[b, :, 0], expected, atol=1e-12)


def test_coefficients_match_numpy_interpolation():
    lmax, order = 2.0, 9

    def h(lam):
        return torch.exp(-3.0 * lam) * torch.cos(2.0 * lam)

    theta = chebyshev_coefficients(h, order, lmax).numpy()
    expected = npcheb.chebinterpolate(
        lambda x: np.exp(-3.0 * (x + 1)) * np.cos(2.0 * (x + 1)), order - 1
    )
    np.testing.assert_allclose(theta, expected, atol=1e-14, rtol=0)
    # The interpolant passes through h at the nodes.
    nodes = chebyshev_nodes(order, lmax)
    torch.testing.assert_close(
        chebyshev_response(torch.from_numpy(theta), nodes, lmax), h(nodes), atol=1e-13, rtol=0
    )


@pytest.mark.parametrize("num_points", [None, 40])
def test_polynomial_response_is_reproduced_exactly(rng, num_points):
    lmax, order = 1.6, 6
    coef = rng.standard_normal(order)  # a polynomial of degree order - 1 in Chebyshev form

    def h(lam):
        return torch.from_numpy(npcheb.chebval(2 * lam.numpy() / lmax - 1, coef))

    theta = chebyshev_coefficients(h, order, lmax, num_points=num_points)
    np.testing.assert_allclose(theta.numpy(), coef, atol=1e-13, rtol=0)


def test_coefficient_layouts():
    def per_channel(lam):
        return torch.stack([torch.exp(-lam), torch.exp(-2 * lam), 1 / (1 + lam)], dim=-1)

    assert chebyshev_coefficients(per_channel, 5, 2.0).shape == (5, 3)
    lmax = torch.tensor([2.0, 4.0], dtype=DTYPE)
    assert chebyshev_coefficients(torch.exp, 5, lmax).shape == (2, 5, 1)
    per_batch = chebyshev_coefficients(per_channel, 5, lmax)
    assert per_batch.shape == (2, 5, 3)
    torch.testing.assert_close(per_batch[1], chebyshev_coefficients(per_channel, 5, 4.0))


@pytest.mark.parametrize("order", [20, 25, 30])
def test_heat_kernel_fit(order):
    """exp(-t λ) on [0, 2], t = 10: the interpolant is within 2 Σ_{k>=K} |c_k| of h."""
    t, lmax = 10.0, 2.0

    def heat(lam):
        return torch.exp(-t * lam)

    theta = chebyshev_coefficients(heat, order, lmax)
    tail = chebyshev_coefficients(heat, 80, lmax)[order:].abs().sum().item()
    grid = torch.linspace(0, lmax, 2001, dtype=DTYPE)
    error = (chebyshev_response(theta, grid, lmax) - heat(grid)).abs().max().item()
    assert error <= 2 * tail + 1e-15
    # Stated tolerances (Bessel-function decay of the coefficients, I_k(5)).
    assert error < {20: 1e-4, 25: 1e-7, 30: 1e-11}[order]


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_heat_filter_chebyshev_against_exact(rng, kind):
    """One response, two methods: they agree within the polynomial's sup error."""
    t, order = 2.0, 25
    dense = random_weights(rng, 2, 12, isolated=(3,))
    graph = graph_from_dense(dense)
    x = torch.from_numpy(rng.standard_normal((2, 12, 4)))

    def heat(lam):
        return torch.exp(-t * lam)

    approx = spectral_filter(graph, x, heat, "chebyshev", kind=kind, order=order)
    exact = spectral_filter(graph, x, heat, "exact", kind=kind)
    lap = dense_laplacian(dense, kind)
    for b in range(2):
        oracle = dense_matrix_function(lap[b], lambda v: np.exp(-t * v), kind) @ x[b].numpy()
        np.testing.assert_allclose(exact[b].numpy(), oracle, atol=1e-10, rtol=0)
    # |p - h| <= sup error of the fit on [0, lmax] bounds the operator error (symmetric
    # L; L_rw is similar to L_sym, whose bound holds after the D^1/2 change of basis).
    lmax = lambda_max_of(dense, kind)
    for b in range(2):
        theta = chebyshev_coefficients(heat, order, float(lmax[b]))
        grid = torch.linspace(0, float(lmax[b]), 4001, dtype=DTYPE)
        sup = (chebyshev_response(theta, grid, float(lmax[b])) - heat(grid)).abs().max()
        diff = torch.linalg.matrix_norm(approx[b] - exact[b], ord=2)
        bound = sup * torch.linalg.matrix_norm(x[b], ord=2)
        if kind == "random_walk":
            deg = torch.from_numpy(dense[b].sum(-1))
            root = torch.where(deg > 0, deg.sqrt(), torch.ones_like(deg))
            bound = bound * (root.max() / root.min())
        assert diff <= bound * (1 + 1e-8) + 1e-13


def test_exact_filter_with_given_eigenpairs(rng):
    dense = random_weights(rng, 2, 10)
    graph = graph_from_dense(dense)
    x = torch.from_numpy(rng.standard_normal((2, 10, 3)))
    lap = laplacian_to_dense(graph, "symmetric")
    values, vectors = torch.linalg.eigh(lap)
    response = torch.exp(-values)
    full = exact_spectral_filter(vectors, values, response, x)
    given = spectral_filter(
        graph, x, lambda v: torch.exp(-v), "exact", eigenpairs=(values, vectors)
    )
    torch.testing.assert_close(full, given, atol=0, rtol=0)
    # A partial basis gives P h(L) P X.
    part = exact_spectral_filter(vectors[..., :4], values[..., :4], lambda v: torch.exp(-v), x)
    projector = vectors[..., :4] @ vectors[..., :4].transpose(-1, -2)
    torch.testing.assert_close(part, projector @ full, atol=1e-12, rtol=0)
    # Per-channel values.
    values3 = torch.stack([torch.exp(-values), values, torch.ones_like(values)], dim=-1)
    out = exact_spectral_filter(vectors, values, values3, x)
    torch.testing.assert_close(out[..., 1:2], lap @ x[..., 1:2], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[..., 2:3], x[..., 2:3], atol=1e-12, rtol=0)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_gradcheck_theta_x_weights(rng, kind):
    dense = random_weights(rng, 1, 5, isolated=(2,))
    graph = graph_from_dense(dense)
    edges = graph.weight > 0
    values = graph.weight[edges].clone().requires_grad_()
    x = torch.from_numpy(rng.standard_normal((1, 5, 2))).requires_grad_()
    theta = torch.from_numpy(rng.standard_normal((4, 2))).requires_grad_()

    def apply(v, signal, coef):
        # Only real edges move; the default lambda_max of "unnormalized" moves with them.
        weight = torch.zeros_like(graph.weight).masked_scatter(edges, v)
        return chebyshev_filter(NeighborGraph(graph.index, weight), signal, coef, kind)

    assert torch.autograd.gradcheck(apply, (values, x, theta))


def test_gradcheck_response_parameters_through_coefficients(rng):
    """A learned heat time t reaches the output through the fitted coefficients."""
    dense = random_weights(rng, 1, 6)
    graph = graph_from_dense(dense)
    x = torch.from_numpy(rng.standard_normal((1, 6, 2)))
    t = torch.tensor(1.3, dtype=DTYPE, requires_grad=True)

    def apply(time):
        return spectral_filter(graph, x, lambda lam: torch.exp(-time * lam), order=12)

    assert torch.autograd.gradcheck(apply, (t,))


# ---------------------------------------------------------------- errors


def test_bad_inputs_name_the_argument(rng):
    graph = graph_from_dense(random_weights(rng, 2, 5))
    x = torch.zeros(2, 5, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match="theta"):
        chebyshev_filter(graph, x, torch.zeros(0, dtype=DTYPE))
    with pytest.raises(ValueError, match="theta"):
        chebyshev_filter(graph, x, torch.zeros(4, 2, dtype=DTYPE))  # C = 2 vs 3
    with pytest.raises(ValueError, match="theta"):
        chebyshev_filter(graph, x, torch.zeros(3, 4, 3, dtype=DTYPE))  # B = 3 vs 2
    with pytest.raises(ValueError, match="theta"):
        chebyshev_filter(graph, x, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="theta"):
        chebyshev_filter(graph, x, torch.tensor([1.0, float("nan")], dtype=DTYPE))
    with pytest.raises(ValueError, match="x must be"):
        chebyshev_filter(graph, torch.zeros(2, 4, 3, dtype=DTYPE), torch.ones(2, dtype=DTYPE))
    with pytest.raises(ValueError, match="x must"):
        chebyshev_filter(graph, x.float(), torch.ones(2, dtype=DTYPE))
    for bad in (0.0, -1.0, float("nan"), float("inf"), torch.tensor([2.0, 0.0])):
        with pytest.raises(ValueError, match="lambda_max"):
            chebyshev_filter(graph, x, torch.ones(2, dtype=DTYPE), lambda_max=bad)
    with pytest.raises(ValueError, match="lambda_max"):
        chebyshev_filter(graph, x, torch.ones(2, dtype=DTYPE), lambda_max=torch.ones(3))
    with pytest.raises(ValueError, match="kind"):
        chebyshev_filter(graph, x, torch.ones(2, dtype=DTYPE), kind="signless")
    with pytest.raises(ValueError, match="order"):
        chebyshev_coefficients(torch.exp, 0, 2.0)
    with pytest.raises(ValueError, match="num_points"):
        chebyshev_coefficients(torch.exp, 5, 2.0, num_points=4)
    with pytest.raises(ValueError, match="lambda_max"):
        chebyshev_coefficients(torch.exp, 5, 0.0)
    with pytest.raises(ValueError, match="h must"):
        chebyshev_coefficients(lambda lam: lam[:2], 5, 2.0)
    with pytest.raises(ValueError, match="h must"):
        chebyshev_coefficients(lambda lam: 1 / (lam - lam), 5, 2.0)
    with pytest.raises(ValueError, match="method"):
        spectral_filter(graph, x, torch.exp, "lanczos")
    with pytest.raises(ValueError, match="lambda_max"):
        chebyshev_response(torch.ones(3, dtype=DTYPE), torch.ones(4), lambda_max=-2.0)
    with pytest.raises(ValueError, match="eigenvalues"):
        chebyshev_response(torch.ones(1, 3, 1, dtype=DTYPE), torch.ones(4), lambda_max=2.0)
    vectors = torch.eye(5, dtype=DTYPE).expand(2, 5, 5)
    with pytest.raises(ValueError, match="response"):
        exact_spectral_filter(vectors, torch.zeros(2, 5, dtype=DTYPE), torch.ones(2, 4), x)
    with pytest.raises(ValueError, match="eigenvalues"):
        exact_spectral_filter(vectors, torch.zeros(2, 4, dtype=DTYPE), torch.ones(2, 5), x)
