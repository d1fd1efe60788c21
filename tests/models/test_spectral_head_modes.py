"""SpectralHead modes: embedding, logits (residual refinement), upsample; image guides."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from cheeger.models.affinity import GUIDES, GridAffinity
from cheeger.models.heads import ConvHead
from cheeger.models.response import HeatResponse, LearnedResponse, TemperResponse
from cheeger.models.solvers import ChebyshevSolver, DenseSolver, PartialSolver
from cheeger.models.spectral_head import MODES, SpectralHead
from cheeger.models.unet import UNet

F64 = torch.float64


def make_head(mode, solver=None, response=None, guide="image", channels=4, classes=3, **kw):
    torch.manual_seed(0)
    affinity = functools.partial(GridAffinity, radius=1, sigma=0.3, guide=guide)
    head = SpectralHead(
        channels,
        classes,
        affinity,
        solver or ChebyshevSolver(order=6),
        response or HeatResponse(t=2.0, learn=True),
        laplacian=kw.pop("laplacian", "random_walk"),
        mode=mode,
        embed_dim=3,
        dtype="float64",
        **kw,
    )
    return head.double()


def two_regions(height=8, width=8, channels=4, scale=1, seed=0):
    """features (1, C, h, w) constant on a left and a right half, and an image (1, 3, h s,
    w s) whose halves differ by 50 in every channel: exp(-...) of that is exactly 0 in
    float64, so the image graph is cut along the region edge."""
    g = torch.Generator().manual_seed(seed)
    left, right = torch.randn(2, channels, generator=g, dtype=F64)
    features = torch.empty(1, channels, height, width, dtype=F64)
    features[..., : width // 2] = left.view(-1, 1, 1)
    features[..., width // 2 :] = right.view(-1, 1, 1)
    image = torch.zeros(1, 3, height * scale, width * scale, dtype=F64)
    image[..., width * scale // 2 :] = 50.0
    return features, image


def noisy_inputs(batch=2, height=8, width=8, channels=4, scale=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height, width, generator=g, dtype=F64)
    image = torch.randn(batch, 3, height * scale, width * scale, generator=g, dtype=F64)
    return features, image


def test_logits_mode_with_alpha_zero_is_the_conv_head():
    features, image = noisy_inputs()
    head = make_head("logits", alpha=0.0, learn_alpha=False)
    conv = ConvHead(4, 3).double()
    conv.classifier.load_state_dict(head.classifier.state_dict())
    logits, aux = head(features, image)
    expected, _ = conv(features, image)
    assert torch.equal(logits, expected)
    assert aux["feature_logits"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("laplacian", ["random_walk", "unnormalized"])
@pytest.mark.parametrize("solver", ["chebyshev", "lanczos"])
def test_refinement_leaves_region_constant_scores_on_a_cut_graph(laplacian, solver):
    # Constant features per region give conv logits constant per region (output stride 1);
    # on a graph cut along the region edge those are in L's null space, which the
    # normalised response keeps exactly: the refinement changes nothing.
    features, image = two_regions()
    solvers = {"chebyshev": ChebyshevSolver(order=5), "lanczos": PartialSolver(k=4, tol=1e-10)}
    head = make_head("logits", solvers[solver], LearnedResponse(), laplacian=laplacian, alpha=2.0)
    with torch.no_grad():
        for p in head.response.parameters():
            p.normal_(std=0.5)
    logits, aux = head(features, image)
    conv = F.conv2d(features, head.classifier.weight, head.classifier.bias)
    # Exact up to rounding (Chebyshev) or the eigen-residual tolerance (lanczos).
    tolerance = 1e-12 if solver == "chebyshev" else 1e-8
    torch.testing.assert_close(logits, conv, atol=tolerance, rtol=0)
    # The same scores on a connected graph (one image colour) are smoothed across the edge.
    joined, _ = head(features, torch.zeros_like(image))
    assert float((joined - conv).detach().abs().max()) > 1e-3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("guide", GUIDES)
def test_guides_and_modes_set_the_graph_and_output_shapes(mode, guide):
    features, image = noisy_inputs(scale=2)
    head = make_head(mode, guide=guide, solver=PartialSolver(k=4) if mode == "embedding" else None)
    widths = {"features": 4, "image": 3, "image+features": 7}
    assert head.affinity.metric.shape == (widths[guide],)
    guide_map = head.affinity.guide_map(features, image, (5, 6))
    assert guide_map.shape == (2, widths[guide], 5, 6)
    logits, aux = head(features, image)
    assert logits.shape == (2, 3, 16, 16)
    size = (8, 8) if mode == "embedding" else (16, 16)
    assert aux["graph_size"] == size
    assert aux["graph"].num_nodes == size[0] * size[1]
    assert aux["graph"].node_features.shape[:2] == (2, size[0] * size[1])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_alpha_response_affinity_and_refinement(mode):
    features, image = noisy_inputs()
    features.requires_grad_(True)
    head = make_head(mode, guide="image+features", solver=PartialSolver(k=4))
    if mode == "upsample":  # starts at 0: give it a value so the filter's gradient flows
        torch.nn.init.normal_(head.refine.weight, std=0.5)
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    logits, _ = head(features, image)
    F.cross_entropy(logits, target).backward()
    named = dict(head.named_parameters())
    checked = ["affinity.metric", "affinity.log_sigma", "response.log_t", "classifier.weight"]
    checked += {"logits": ["alpha"], "upsample": ["refine.weight", "value.weight"]}.get(
        mode, ["value.weight"]
    )
    for name in checked:
        grad = named[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), name
        assert float(grad.abs().max()) > 0, name
    assert bool(torch.isfinite(features.grad).all())


def test_upsample_mode_starts_as_the_conv_head():
    features, image = noisy_inputs()
    head = make_head("upsample")
    conv = ConvHead(4, 3).double()
    conv.classifier.load_state_dict(head.classifier.state_dict())
    torch.testing.assert_close(head(features, image)[0], conv(features, image)[0])


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_overfits_one_batch(mode):
    # Two colour regions with a wiggly boundary; a tiny U-Net and the head must learn them.
    torch.manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    target = torch.stack([(xs > 12 + 4 * torch.sin(ys / 3 + s)).long() for s in (0.0, 2.0)])
    image = (target.unsqueeze(1).float() * 2 - 1).expand(-1, 3, -1, -1).contiguous()
    image = image + 0.3 * torch.randn_like(image)
    stride = 4 if mode == "upsample" else 1
    backbone = UNet(3, base_channels=8, depth=2, max_channels=16, output_stride=stride)
    affinity = functools.partial(GridAffinity, radius=1, sigma=0.5, guide="image")
    solver = PartialSolver(k=4) if mode == "embedding" else ChebyshevSolver(order=4)
    head = SpectralHead(
        backbone.out_channels, 2, affinity, solver, TemperResponse(1.0), "random_walk", mode
    )
    parameters = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        logits, _ = head(backbone(image), image)
        loss = F.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()
    accuracy = float((logits.argmax(1) == target).float().mean())
    assert accuracy > 0.95, (mode, accuracy, float(loss))


def test_refused_combinations_name_both_options():
    with pytest.raises(ValueError, match="solver=dense.*head.mode=logits"):
        make_head("logits", DenseSolver(k=4))
    with pytest.raises(ValueError, match="head.noise_gate.*head.mode=upsample"):
        make_head("upsample", PartialSolver(k=4), noise_gate=True)
    with pytest.raises(ValueError, match="head.denoise.*head.mode=logits"):
        make_head("logits", denoise=True)
    with pytest.raises(ValueError, match="head.mode must be one of"):
        make_head("refine")
    with pytest.raises(ValueError, match="head.refine_input"):
        make_head("logits", refine_input="probabilities")
    with pytest.raises(ValueError, match="affinity.guide must be one of"):
        make_head("logits", guide="rgb")
    with pytest.raises(ValueError, match="head.alpha"):
        make_head("logits", alpha=math.nan)


def test_bad_inputs_name_the_option_and_the_fix():
    features, image = noisy_inputs()
    with pytest.raises(ValueError, match="head.mode=logits .* needs the image"):
        make_head("logits", guide="features")(features)
    with pytest.raises(ValueError, match="affinity.guide=image needs the input image"):
        make_head("embedding", PartialSolver(k=4))(features)
    with pytest.raises(ValueError, match="H, W multiples of their h, w"):
        make_head("logits")(features, image[..., :15])
    with pytest.raises(ValueError, match="expects 3 image channels"):
        make_head("logits")(features, image[:, :2])
    with pytest.raises(ValueError, match="solver.max_nodes=32"):
        make_head("embedding", DenseSolver(k=4, max_nodes=32), guide="features")(features)


def test_softmax_refinement_input_refines_probabilities():
    features, image = noisy_inputs()
    head = make_head("logits", refine_input="softmax", alpha=1.0)
    logits, aux = head(features, image)
    conv = F.interpolate(
        F.conv2d(features, head.classifier.weight, head.classifier.bias),
        size=(16, 16),
        mode="bilinear",
        align_corners=False,
    )
    # The correction is a difference of two probability-like maps: bounded by 2 alpha.
    correction = (logits - conv).detach()
    assert float(correction.abs().max()) <= 2.1
    torch.testing.assert_close(correction, aux["embedding"].detach())
