"""Affinities against numpy formulas; gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.ops.affinity import (
    apply_metric,
    cosine_affinity,
    edge_affinity,
    edge_squared_distances,
    gaussian_affinity,
    gaussian_kernel,
    normalize_features,
    self_tuning_affinity,
    squared_distance,
)

DTYPE = torch.float64
B, N, C, K = 2, 10, 3, 4


@pytest.fixture
def rng():
    return np.random.default_rng(77)


def candidate_lists(rng, batch=B, n=N, k=K, self_slots=True):
    """Random distinct candidates per row; every third row gets a padding (self) slot."""
    index = np.stack(
        [np.stack([rng.choice(n, k, replace=False) for _ in range(n)]) for _ in range(batch)]
    )
    if self_slots:
        index[:, ::3, -1] = np.arange(n)[::3]
    return torch.from_numpy(index)


def gathered(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    return x[np.arange(x.shape[0])[:, None, None], index]  # (B, N, K, C)


def metric_cases(rng):
    return {
        "none": None,
        "diagonal": torch.from_numpy(rng.random(C) + 0.5),
        "low_rank": torch.from_numpy(rng.standard_normal((2, C))),
        "full": torch.from_numpy(rng.standard_normal((C, C))),
    }


def metric_matrix(metric):
    if metric is None:
        return np.eye(C)
    m = metric.numpy()
    return np.diag(m) if m.ndim == 1 else m


@pytest.mark.parametrize("metric_name", ["none", "diagonal", "low_rank", "full"])
def test_edge_squared_distances_match_brute_force(rng, metric_name):
    metric = metric_cases(rng)[metric_name]
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    index = candidate_lists(rng)
    got = edge_squared_distances(x, index, metric).numpy()
    diff = x.numpy()[:, :, None, :] - gathered(x.numpy(), index.numpy())
    expected = (np.einsum("rc,bnkc->bnkr", metric_matrix(metric), diff) ** 2).sum(-1)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    pairs = squared_distance(x[:, :, None, :], x[:, None, :, :], metric).numpy()
    direct = diff_all = x.numpy()[:, :, None, :] - x.numpy()[:, None, :, :]
    direct = (np.einsum("rc,bijc->bijr", metric_matrix(metric), diff_all) ** 2).sum(-1)
    np.testing.assert_allclose(pairs, direct, atol=1e-12)


def test_edge_squared_distances_are_accurate_far_from_the_origin(rng):
    # float32 features offset by 1e3: |x|^2 ~ 3e6, so the uncentred expansion would lose
    # all digits of d^2 ~ 1; centring keeps the error at float32 rounding of d^2.
    base = rng.standard_normal((1, 64, C))
    x = torch.from_numpy(base + 1e3).float()
    index = candidate_lists(rng, 1, 64, 5, self_slots=False)
    got = edge_squared_distances(x, index).double().numpy()
    expected = ((base[:, :, None] - gathered(base, index.numpy())) ** 2).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sigma", [0.7, torch.tensor(1.3, dtype=DTYPE), torch.tensor([0.5, 2.0])])
def test_gaussian_affinity_formula(rng, sigma):
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    index = candidate_lists(rng)
    got = gaussian_affinity(x, index, sigma).numpy()
    d2 = ((x.numpy()[:, :, None] - gathered(x.numpy(), index.numpy())) ** 2).sum(-1)
    s = np.asarray(sigma.numpy() if isinstance(sigma, torch.Tensor) else sigma).reshape(-1, 1, 1)
    expected = np.exp(-d2 / (2 * s**2))
    expected[index.numpy() == np.arange(N)[None, :, None]] = 0.0  # padding slots
    np.testing.assert_allclose(got, expected, atol=1e-14)
    pairs = gaussian_kernel(torch.from_numpy(d2), sigma).numpy()
    np.testing.assert_allclose(pairs, np.exp(-d2 / (2 * s**2)), atol=1e-14)


@pytest.mark.parametrize(
    ("sigma", "message"),
    [
        (0.0, "sigma must be > 0"),
        (-1.0, "sigma must be > 0"),
        (torch.tensor([1.0, -2.0]), "sigma must be > 0"),
        (float("nan"), "sigma must be finite"),
        (torch.ones(3), "sigma must be a scalar or a vector of length B"),
        (torch.ones(2, 1), "sigma must be a scalar or a vector of length B"),
    ],
)
def test_gaussian_affinity_rejects_bad_sigma(rng, sigma, message):
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    with pytest.raises(ValueError, match=message):
        gaussian_affinity(x, candidate_lists(rng), sigma)


def self_tuning_oracle(x, index, m, min_scale):
    d2 = ((x[:, :, None] - gathered(x, index)) ** 2).sum(-1)
    is_edge = index != np.arange(x.shape[1])[None, :, None]
    scale = np.empty(d2.shape[:2])
    for b in range(d2.shape[0]):
        for i in range(d2.shape[1]):
            candidates = np.sort(d2[b, i][is_edge[b, i]])
            scale[b, i] = candidates[min(m, candidates.size) - 1] if candidates.size else 0.0
    scale = np.maximum(scale, min_scale)
    neighbour = np.take_along_axis(scale, index.reshape(index.shape[0], -1), 1).reshape(index.shape)
    return np.exp(-d2 / np.sqrt(scale[:, :, None] * neighbour)) * is_edge


@pytest.mark.parametrize("m", [1, 2, 4])
def test_self_tuning_affinity_formula(rng, m):
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    index = candidate_lists(rng)
    got = self_tuning_affinity(x, index, scale_neighbor=m).numpy()
    np.testing.assert_allclose(got, self_tuning_oracle(x.numpy(), index.numpy(), m, 1e-12))


def test_self_tuning_with_duplicate_points_is_finite(rng):
    # Nodes 0-3 coincide: their 2nd-neighbour distance is 0, floored at min_scale.
    x = rng.standard_normal((1, N, C))
    x[0, 1:4] = x[0, 0]
    index = torch.from_numpy(np.stack([np.roll(np.arange(N), -s) for s in range(1, K + 1)], -1))
    index = index.unsqueeze(0)
    features = torch.from_numpy(x).requires_grad_()
    weight = self_tuning_affinity(features, index, scale_neighbor=2)
    np.testing.assert_allclose(
        weight.detach().numpy(), self_tuning_oracle(x, index.numpy(), 2, 1e-12), atol=1e-15
    )
    assert weight[0, 0, 0] == 1.0  # 0 -> 1, a duplicate
    weight.sum().backward()
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("mode", ["clamp", "shift"])
def test_cosine_affinity_formula(rng, mode):
    x = rng.standard_normal((B, N, C))
    x[0, 5] = 0.0  # a zero vector has cosine 0 with everything
    index = candidate_lists(rng)
    got = cosine_affinity(torch.from_numpy(x), index, mode).numpy()
    norms = np.linalg.norm(x, axis=-1)
    unit = x / np.where(norms > 0, norms, 1.0)[..., None]
    cos = np.einsum("bnc,bnkc->bnk", unit, gathered(unit, index.numpy()))
    expected = np.maximum(cos, 0.0) if mode == "clamp" else (1 + cos) / 2
    expected[index.numpy() == np.arange(N)[None, :, None]] = 0.0
    np.testing.assert_allclose(got, expected, atol=1e-14)


def test_cosine_rejects_bad_mode(rng):
    with pytest.raises(ValueError, match="mode must be one of"):
        cosine_affinity(
            torch.zeros(1, 3, 2, dtype=DTYPE), torch.zeros(1, 3, 1, dtype=torch.long), "abs"
        )


def test_metric_forms(rng):
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    for metric in metric_cases(rng).values():
        np.testing.assert_allclose(
            apply_metric(x, metric).numpy(), x.numpy() @ metric_matrix(metric).T, atol=1e-14
        )
    with pytest.raises(ValueError, match=r"metric must be \(3,\) or \(r, 3\)"):
        apply_metric(x, torch.ones(C + 1, dtype=DTYPE))
    with pytest.raises(ValueError, match="metric must be finite"):
        apply_metric(x, torch.full((C,), float("inf"), dtype=DTYPE))


def test_normalize_features_keeps_zero_rows(rng):
    x = torch.from_numpy(rng.standard_normal((1, 4, C)))
    x[0, 2] = 0.0
    unit = normalize_features(x)
    np.testing.assert_allclose(unit.norm(dim=-1).numpy(), [[1.0, 1.0, 0.0, 1.0]], atol=1e-15)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("metric_name", ["none", "diagonal", "low_rank", "full"])
def test_gaussian_gradcheck_features_sigma_metric(rng, metric_name):
    index = candidate_lists(rng, 1, 6, 3)
    x = torch.from_numpy(rng.standard_normal((1, 6, C))).requires_grad_()
    sigma = torch.tensor(1.1, dtype=DTYPE, requires_grad=True)
    metric = metric_cases(rng)[metric_name]
    inputs = (x, sigma) if metric is None else (x, sigma, metric.requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: gaussian_affinity(a[0], index, *a[1:]), inputs)


def test_self_tuning_and_cosine_gradcheck(rng):
    index = candidate_lists(rng, 1, 7, 3)
    x = torch.from_numpy(rng.standard_normal((1, 7, C))).requires_grad_()
    metric = torch.from_numpy(rng.random(C) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, m: self_tuning_affinity(a, index, scale_neighbor=2, metric=m), (x, metric)
    )
    assert torch.autograd.gradcheck(lambda a: cosine_affinity(a, index, "shift"), (x,))
    assert torch.autograd.gradcheck(lambda a: cosine_affinity(a, index, "clamp"), (x,))


def test_gradients_are_finite_and_zero_at_coincident_points():
    # d = 0 must not produce NaN (no sqrt at 0): the gradient of d^2 there is exactly 0.
    x = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]], dtype=DTYPE, requires_grad=True)
    index = torch.tensor([[[1], [0], [0]]])
    d2 = edge_squared_distances(x, index)
    assert d2[0, 0, 0] == 0.0
    d2[0, :2].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.zeros((1, 3, 2)), atol=1e-15)
    for kind in ["gaussian", "self_tuning", "cosine"]:
        y = x.detach().clone().requires_grad_()
        edge_affinity(y, index, kind, sigma=1.0, scale_neighbor=1).sum().backward()
        assert torch.isfinite(y.grad).all(), kind


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("features", "index", "message"),
    [
        (
            torch.full((1, 3, 2), float("nan")),
            torch.zeros(1, 3, 1, dtype=torch.long),
            "features must be finite",
        ),
        (
            torch.zeros(1, 0, 2),
            torch.zeros(1, 0, 1, dtype=torch.long),
            r"features must have at least one node",
        ),
        (
            torch.zeros(3, 2),
            torch.zeros(1, 3, 1, dtype=torch.long),
            r"features must be \(B, N, C\)",
        ),
        (
            torch.zeros(1, 3, 2),
            torch.zeros(1, 4, 1, dtype=torch.long),
            r"index must be \(B, N, K\)",
        ),
        (torch.zeros(1, 3, 2), torch.full((1, 3, 1), 3), r"index entries must lie in \[0, N\)"),
        (torch.zeros(1, 3, 2), torch.zeros(1, 3, 1), "index must be an int64"),
    ],
)
def test_bad_input_raises(features, index, message):
    with pytest.raises(ValueError, match=message):
        edge_squared_distances(features, index)


def test_dispatcher(rng):
    x = torch.from_numpy(rng.standard_normal((B, N, C)))
    index = candidate_lists(rng)
    torch.testing.assert_close(
        edge_affinity(x, index, "gaussian", sigma=0.9), gaussian_affinity(x, index, 0.9)
    )
    torch.testing.assert_close(
        edge_affinity(x, index, "self_tuning", scale_neighbor=3), self_tuning_affinity(x, index, 3)
    )
    torch.testing.assert_close(
        edge_affinity(x, index, "cosine", cosine_mode="shift"), cosine_affinity(x, index, "shift")
    )
    with pytest.raises(ValueError, match="sigma must be given"):
        edge_affinity(x, index, "gaussian")
    with pytest.raises(ValueError, match="kind must be one of"):
        edge_affinity(x, index, "laplace")
    with pytest.raises(ValueError, match=r"scale_neighbor must be in \[1, K\]"):
        self_tuning_affinity(x, index, scale_neighbor=K + 1)
