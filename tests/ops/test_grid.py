"""Window graphs on a feature map against a dense construction with explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from cheeger.ops.affinity import gaussian_affinity
from cheeger.ops.graph import to_dense, validate_graph
from cheeger.ops.grid import grid_graph, grid_neighbors, window_offsets

DTYPE = torch.float64


@pytest.fixture
def rng():
    return np.random.default_rng(5)


@pytest.mark.parametrize(("radius", "square", "disk"), [(1, 8, 4), (2, 24, 12), (3, 48, 28)])
def test_window_sizes_and_central_symmetry(radius, square, disk):
    for window, count in (("square", square), ("disk", disk)):
        offsets = window_offsets(radius, window)
        assert offsets.shape == (count, 2)
        assert not torch.any((offsets == 0).all(-1))
        assert torch.equal(offsets.flip(0), -offsets)
        assert int(offsets.abs().max()) == radius


def test_grid_neighbors_against_loops():
    height, width, radius = 4, 5, 2
    index, inside, offsets = grid_neighbors(height, width, radius, "disk")
    for y in range(height):
        for x in range(width):
            p = y * width + x
            for slot, (dy, dx) in enumerate(offsets.tolist()):
                ok = 0 <= y + dy < height and 0 <= x + dx < width
                assert bool(inside[p, slot]) == ok
                assert int(index[p, slot]) == ((y + dy) * width + x + dx if ok else p)


def dense_window_graph(features, radius, sigma_f, sigma_x, window):
    """(B, N, N) bilateral window graph by explicit loops over pixel pairs."""
    batch, _, height, width = features.shape
    n = height * width
    out = np.zeros((batch, n, n))
    sigma_f = np.broadcast_to(np.asarray(sigma_f, dtype=float), (batch,))
    sigma_x = (
        None if sigma_x is None else np.broadcast_to(np.asarray(sigma_x, dtype=float), (batch,))
    )
    for b in range(batch):
        for p in range(n):
            py, px = divmod(p, width)
            for q in range(n):
                qy, qx = divmod(q, width)
                dy, dx = qy - py, qx - px
                if p == q or max(abs(dy), abs(dx)) > radius:
                    continue
                if window == "disk" and dy * dy + dx * dx > radius * radius:
                    continue
                diff = features[b, :, py, px] - features[b, :, qy, qx]
                value = -(diff @ diff) / (2 * sigma_f[b] ** 2)
                if sigma_x is not None:
                    value -= (dy * dy + dx * dx) / (2 * sigma_x[b] ** 2)
                out[b, p, q] = np.exp(value)
    return out


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("sigma_spatial", [None, 1.5, "per_batch"])
@pytest.mark.parametrize("window", ["square", "disk"])
def test_window_graph_matches_dense_loops(rng, radius, sigma_spatial, window, device64):
    features = rng.standard_normal((2, 3, 5, 7))
    sigma_x = np.array([1.5, 0.8]) if sigma_spatial == "per_batch" else sigma_spatial
    sigma_f = np.array([0.9, 1.7])
    graph = grid_graph(
        torch.from_numpy(features).to(device64),
        radius,
        torch.from_numpy(sigma_f).to(device64),
        None if sigma_x is None else torch.as_tensor(sigma_x, dtype=DTYPE, device=device64),
        window=window,
    )
    assert graph.weight.device.type == device64
    graph = type(graph)(graph.index.cpu(), graph.weight.cpu())
    expected = dense_window_graph(features, radius, sigma_f, sigma_x, window)
    np.testing.assert_allclose(to_dense(graph).numpy(), expected, atol=1e-14)
    assert graph.max_degree == window_offsets(radius, window).shape[0]
    # Exactly symmetric, padding where the window leaves the image.
    validate_graph(graph, check_symmetric=True, atol=0.0)
    _, inside, _ = grid_neighbors(5, 7, radius, window)
    assert torch.all(graph.weight[:, ~inside] == 0)
    own = torch.arange(35).view(35, 1).expand(35, inside.shape[1])
    assert torch.equal(graph.index[0][~inside], own[~inside])


def test_window_graph_with_metric(rng):
    features = rng.standard_normal((1, 4, 3, 4))
    metric = rng.standard_normal((2, 4))
    graph = grid_graph(torch.from_numpy(features), 1, 1.0, metric=torch.from_numpy(metric))
    mapped = np.einsum("rc,bchw->brhw", metric, features)
    np.testing.assert_allclose(
        to_dense(graph).numpy(), dense_window_graph(mapped, 1, 1.0, None, "square"), atol=1e-14
    )


def test_global_knn_edges_are_merged_by_union(rng):
    features = rng.standard_normal((2, 3, 5, 7))
    sigma_f, sigma_x, k = 1.1, 2.0, 3
    graph = grid_graph(torch.from_numpy(features), 1, sigma_f, sigma_x, k_global=k)
    local = dense_window_graph(features, 1, sigma_f, sigma_x, "square")
    distant = np.zeros_like(local)
    for b in range(2):
        nodes = features[b].reshape(3, -1).T
        d2 = cdist(nodes, nodes, "sqeuclidean")
        np.fill_diagonal(d2, np.inf)
        for i, row in enumerate(np.argsort(d2, axis=1, kind="stable")[:, :k]):
            distant[b, i, row] = np.exp(-d2[i, row] / (2 * sigma_f**2))
    distant = np.maximum(distant, np.transpose(distant, (0, 2, 1)))
    np.testing.assert_allclose(to_dense(graph).numpy(), np.maximum(local, distant), atol=1e-14)
    validate_graph(graph, check_symmetric=True)
    capped = grid_graph(torch.from_numpy(features), 1, sigma_f, sigma_x, k_global=k, max_degree=5)
    assert capped.max_degree <= 5


def test_radius_larger_than_the_map_links_everything(rng):
    features = rng.standard_normal((1, 2, 2, 3))
    graph = grid_graph(torch.from_numpy(features), 4, 1.0)
    dense = to_dense(graph)[0].numpy()
    assert np.all(dense[~np.eye(6, dtype=bool)] > 0)


def test_single_pixel_map_has_no_edges():
    graph = grid_graph(torch.ones(1, 3, 1, 1, dtype=DTYPE), 1, 1.0)
    assert graph.index.shape == (1, 1, 8) and torch.all(graph.weight == 0)


def test_grid_graph_gradcheck(rng):
    # Batch of 2: the backward reads the transposed values through the window's
    # reverse-slot map, offset per batch element.
    features = torch.from_numpy(rng.standard_normal((2, 2, 3, 3))).requires_grad_()
    sigma_f = torch.tensor(1.3, dtype=DTYPE, requires_grad=True)
    sigma_x = torch.tensor([1.7, 0.9], dtype=DTYPE, requires_grad=True)
    metric = torch.from_numpy(rng.random(2) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f, s, t, m: grid_graph(f, 1, s, t, metric=m).weight,
        (features, sigma_f, sigma_x, metric),
    )


@pytest.mark.parametrize("window", ["square", "disk"])
def test_backward_matches_the_generic_edge_path(rng, window):
    # The window graph's backward skips the column sort; the generic path does not.
    features = torch.from_numpy(rng.standard_normal((2, 3, 4, 5))).requires_grad_()
    probe = torch.from_numpy(rng.random((2, 20, window_offsets(2, window).shape[0])))
    graph = grid_graph(features, 2, 1.4, window=window)
    (grad,) = torch.autograd.grad((graph.weight * probe).sum(), features)
    nodes = features.flatten(2).transpose(1, 2)
    generic = gaussian_affinity(nodes, graph.index, 1.4)
    (expected,) = torch.autograd.grad((generic * probe).sum(), features)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": torch.zeros(1, 4, 4)}, r"features must be \(B, C, h, w\)"),
        ({"features": torch.zeros(1, 2, 0, 4)}, "features must have h, w >= 1"),
        ({"features": torch.full((1, 2, 3, 3), float("nan"))}, "features must be finite"),
        ({"radius": 0}, "radius must be an int >= 1"),
        ({"radius": 1.5}, "radius must be an int >= 1"),
        ({"window": "diamond"}, "window must be one of"),
        ({"sigma_feature": 0.0}, "sigma_feature must be > 0"),
        ({"sigma_spatial": -2.0}, "sigma_spatial must be > 0"),
        ({"k_global": -1}, "k_global must be an int >= 0"),
        ({"k_global": 9}, r"k_global must be <= N - 1 = 8"),
    ],
)
def test_bad_input_raises(kwargs, message):
    arguments = {"features": torch.zeros(1, 2, 3, 3), "radius": 1, "sigma_feature": 1.0}
    arguments.update(kwargs)
    features = arguments.pop("features")
    with pytest.raises(ValueError, match=message):
        grid_graph(features, **arguments)
