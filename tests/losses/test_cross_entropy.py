from __future__ import annotations

import math

import pytest
import torch

from cheeger.losses import CrossEntropy


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
    with pytest.raises(ValueError, match="expected num_classes=3"):
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
