"""The fixed image-diffusion control: evaluation-only PageRank smoothing of the scores."""

from __future__ import annotations

import pytest
import torch

from cheeger.models.postprocess import ImageDiffusion
from cheeger.ops.grid import grid_graph
from cheeger.ops.propagation import pagerank_propagate


def test_diffuses_softmax_on_the_image_graph_and_returns_log_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, generator=g)
    image = torch.randn(2, 3, 6, 7, generator=g)
    out = ImageDiffusion(radius=1, sigma=0.5, beta=0.9, iterations=10)(logits, image)
    graph = grid_graph(image, 1, 0.5)
    p = logits.softmax(1).flatten(2).transpose(1, 2)
    expected = pagerank_propagate(graph, p, 0.9, 10).transpose(1, 2).reshape(2, 4, 6, 7)
    torch.testing.assert_close(out.exp(), expected)


def test_snaps_a_blurred_boundary_to_the_image_edge():
    # Scores blurred across the colour edge (left half red, right half blue): after
    # diffusion on the image graph the decision follows the colour edge.
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 3.0
    ramp = torch.linspace(-1, 1, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    logits = torch.cat([-ramp + 0.5, ramp - 0.5], dim=1)  # raw boundary at column 6
    target = (torch.arange(8) >= 4).long().expand(8, 8)
    assert bool((logits.argmax(1)[0] != target).any())
    refined = ImageDiffusion(radius=2, sigma=0.1, beta=0.98, iterations=50)(logits, image)
    assert torch.equal(refined.argmax(1)[0], target)


def test_module_applies_it_only_outside_training(tiny_module):
    image = torch.randn(1, 3, 16, 16)
    plain, _ = tiny_module(image)  # eval mode, no post-processing
    tiny_module.postprocess = ImageDiffusion(radius=1, iterations=5)
    evaluated, _ = tiny_module(image)
    assert not torch.allclose(evaluated, plain)
    torch.testing.assert_close(evaluated, ImageDiffusion(radius=1, iterations=5)(plain, image))
    tiny_module.train()
    trained, _ = tiny_module(image)  # training mode: the head's own logits
    assert trained.requires_grad and not torch.allclose(trained, evaluated)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"radius": 0}, "radius"),
        ({"sigma": 0}, "sigma"),
        ({"beta": 1.0}, "beta"),
        ({"iterations": -1}, "iterations"),
    ],
)
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"postprocess.{key}"):
        ImageDiffusion(**kwargs)
