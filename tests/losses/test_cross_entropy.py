from __future__ import annotations

import math

import pytest
import torch

from cheeger.losses import CrossEntropy
from cheeger.losses.cross_entropy import pixel_cross_entropy, weighted_pixel_mean


def test_matches_hand_computation_with_ignore_and_weights():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 255]]])
    loss = CrossEntropy(num_classes=2)(logits, target)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))
    target = torch.tensor([[[0, 1]]])
    weighted = CrossEntropy(num_classes=2, class_weights=[1.0, 3.0])(logits, target)
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    assert weighted.item() == pytest.approx((l0 + 3 * l1) / 4)


def test_all_ignored_batch_is_zero_with_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = CrossEntropy(num_classes=3)(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_bad_configuration():
    with pytest.raises(ValueError, match="class_weights must have num_classes=3"):
        CrossEntropy(num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"num_classes=3, found shape \(1, 4, 2, 2\)"):
        CrossEntropy(num_classes=3)(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_median_frequency_weights_are_installed_and_checkpointed():
    loss = CrossEntropy(num_classes=3, class_weights="median_frequency")
    assert loss.needs_dataset_weights and torch.equal(loss.weight, torch.ones(3))
    loss.set_class_weights(torch.tensor([0.5, 1.0, 2.0]))
    restored = CrossEntropy(num_classes=3, class_weights="median_frequency")
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.weight, torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="median_frequency"):
        CrossEntropy(num_classes=3, class_weights="inverse")


def test_class_weight_power_softens_dataset_weights():
    loss = CrossEntropy(num_classes=3, class_weights="median_frequency", class_weight_power=0.5)
    loss.set_class_weights(torch.tensor([0.25, 1.0, 9.0]))
    assert torch.allclose(loss.weight, torch.tensor([0.5, 1.0, 3.0]))
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=f"loss.class_weight_power must be in .*{bad}"):
            CrossEntropy(num_classes=3, class_weight_power=bad)


def test_pixel_losses_and_weights_by_hand():
    # pixel 0: label 0, p0 = e^2 / (e^2 + 1); pixel 1: label 1, p1 = e / (e + 1); pixel 2 ignored
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, 5.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1, 255]]])
    l0 = math.log(1 + math.exp(-2))
    l1 = math.log(1 + math.exp(-1))
    loss, pixel_weight = pixel_cross_entropy(logits, target, torch.tensor([0.5, 2.0]))
    assert loss[0, 0].tolist() == pytest.approx([0.5 * l0, 2.0 * l1, 0.0])
    assert pixel_weight[0, 0].tolist() == [0.5, 2.0, 0.0]
    assert weighted_pixel_mean(loss, pixel_weight).item() == pytest.approx(
        (0.5 * l0 + 2 * l1) / 2.5
    )
    # label smoothing eps = 0.2 over C = 2, no class weights: (1 - eps) l_y + eps / 2 (l_0 + l_1)
    loss, pixel_weight = pixel_cross_entropy(logits, target, label_smoothing=0.2)
    l0_other = math.log(1 + math.exp(2))  # -log p1 at pixel 0
    assert loss[0, 0, 0].item() == pytest.approx(0.8 * l0 + 0.1 * (l0 + l0_other))
    assert pixel_weight[0, 0].tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mean_matches_torch_cross_entropy_with_weights(label_smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    target[0, 1] = 255
    weight = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64)
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=weight, ignore_index=255, label_smoothing=label_smoothing
    )
    loss = CrossEntropy(4, weight.tolist(), label_smoothing=label_smoothing)
    loss.weight = weight
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)


def test_zero_total_weight_gives_zero_not_nan():
    # every valid pixel has class weight 0 while label smoothing keeps the losses positive
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    loss = CrossEntropy(2, class_weights=[0.0, 1.0], label_smoothing=0.2)(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
