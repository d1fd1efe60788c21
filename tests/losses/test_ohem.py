from __future__ import annotations

import math

import pytest
import torch

from cheeger.losses import CrossEntropy, OhemCrossEntropy
from cheeger.losses.ohem import hard_pixel_mask, target_probability

# Four pixels (1, 2, 2, 2); target-class probabilities sigmoid(2), 1/2, sigmoid(1), sigmoid(-1).
LOGITS = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, -1.0]]]], dtype=torch.float64)
TARGET = torch.tensor([[[0, 0], [1, 1]]])
CE_A = math.log(1 + math.exp(-2))  # p = 0.881
CE_B = math.log(2)  # p = 0.5
CE_C = math.log(1 + math.exp(-1))  # p = 0.731
CE_D = math.log(1 + math.exp(1))  # p = 0.269


def test_target_probability_by_hand():
    prob = target_probability(LOGITS, TARGET)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert prob.flatten().tolist() == pytest.approx([sig(2), 0.5, sig(1), sig(-1)])
    ignored = target_probability(LOGITS, torch.tensor([[[255, 0], [1, 1]]]))
    assert ignored[0, 0, 0].item() == 1.0


def test_keeps_pixels_below_threshold():
    loss = OhemCrossEntropy(2, threshold=0.7, min_kept_fraction=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_B + CE_D) / 2)


def test_keeps_at_least_the_hardest_fraction():
    # ceil(0.75 * 4) = 3 hardest: p = 0.269, 0.5, 0.731
    loss = OhemCrossEntropy(2, threshold=0.7, min_kept_fraction=0.75)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_B + CE_C + CE_D) / 3)
    # ceil(0.3 * 4) = 2 < the 2 pixels under the threshold: the threshold decides
    loss = OhemCrossEntropy(2, threshold=0.7, min_kept_fraction=0.3)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_B + CE_D) / 2)


def test_class_weights_and_ignore():
    loss = OhemCrossEntropy(2, class_weights=[1.0, 3.0], min_kept_fraction=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_B + 3 * CE_D) / 4)
    # pixel d ignored: 3 valid pixels, ceil(0.5 * 3) = 2 hardest are b and c
    target = torch.tensor([[[0, 0], [1, 255]]])
    loss = OhemCrossEntropy(2, threshold=0.1, min_kept_fraction=0.5)(LOGITS, target)
    assert loss.item() == pytest.approx((CE_B + CE_C) / 2)


def test_unselected_pixels_get_no_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    OhemCrossEntropy(2, min_kept_fraction=0.0)(logits, TARGET).backward()
    grad = logits.grad.abs().sum(1)[0]  # (2, 2)
    assert grad[0, 0] == 0 and grad[1, 0] == 0 and grad[0, 1] > 0 and grad[1, 1] > 0


def test_threshold_one_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 4, 6), generator=g)
    target[1, :2] = 255
    weights = [0.5, 1.0, 2.0, 1.5, 0.1]
    ohem = OhemCrossEntropy(5, weights, threshold=1.0, min_kept_fraction=0.0)
    plain = CrossEntropy(5, weights)
    assert ohem(logits, target).item() == pytest.approx(plain(logits, target).item(), rel=1e-6)


def test_hard_pixel_mask_counts_ties_and_invalid_pixels():
    prob = torch.tensor([0.9, 0.8, 0.8, 0.1, 0.95])
    valid = torch.tensor([True, True, True, False, True])
    keep = hard_pixel_mask(prob, valid, threshold=0.5, min_kept_fraction=0.5)
    # ceil(0.5 * 4) = 2 among the valid: the two 0.8s; the invalid 0.1 never
    assert keep.tolist() == [False, True, True, False, False]
    assert not hard_pixel_mask(prob, torch.zeros(5, dtype=torch.bool), 1.0, 1.0).any()


def test_all_ignored_is_zero_and_bad_arguments():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = OhemCrossEntropy(2)(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="threshold must be in"):
        OhemCrossEntropy(2, threshold=0.0)
    with pytest.raises(ValueError, match="min_kept_fraction must be in"):
        OhemCrossEntropy(2, min_kept_fraction=1.5)


def test_class_weight_power_reaches_the_cross_entropy_core():
    loss = OhemCrossEntropy(num_classes=3, class_weights="median_frequency", class_weight_power=0.5)
    loss.set_class_weights(torch.tensor([4.0, 1.0, 0.25]))
    assert torch.allclose(loss.weight, torch.tensor([2.0, 1.0, 0.5]))
