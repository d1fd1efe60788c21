from __future__ import annotations

import pytest
import torch

from cheeger.losses import DiceLoss
from cheeger.losses.dice import soft_dice_loss


def three_pixels(rows) -> torch.Tensor:
    """(1, C, 1, 3) probabilities from three per-pixel rows."""
    return torch.tensor([rows], dtype=torch.float64).permute(0, 2, 1).unsqueeze(2)


TARGET = torch.tensor([[[0, 1, 255]]])


def test_two_classes_by_hand():
    probs = three_pixels([(0.8, 0.2), (0.4, 0.6), (0.5, 0.5)])  # the third pixel is ignored
    # class 0: I = 0.8, sum p = 0.8 + 0.4, sum g = 1; class 1: I = 0.6, sum p = 0.2 + 0.6, sum g = 1
    dice0, dice1 = (1.6 + 1) / (2.2 + 1), (1.2 + 1) / (1.8 + 1)
    assert soft_dice_loss(probs, TARGET, smooth=1.0).item() == pytest.approx(
        1 - (dice0 + dice1) / 2
    )
    assert soft_dice_loss(probs, TARGET, smooth=0.0).item() == pytest.approx(
        1 - (1.6 / 2.2 + 1.2 / 1.8) / 2
    )


def test_absent_classes_are_not_averaged():
    probs = three_pixels([(0.7, 0.2, 0.1), (0.3, 0.6, 0.1), (0.0, 0.0, 1.0)])
    # class 2 is absent; class 0: 1.4 / 2.0, class 1: 1.2 / 1.8
    expected = 1 - (1.4 / 2.0 + 1.2 / 1.8) / 2
    assert soft_dice_loss(probs, TARGET, smooth=0.0).item() == pytest.approx(expected)


def test_perfect_prediction_is_zero_and_module_uses_softmax():
    target = torch.tensor([[[0, 2], [1, 255]]])
    probs = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).double()
    assert soft_dice_loss(probs, target, smooth=0.0).item() == pytest.approx(0.0, abs=1e-15)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    loss = DiceLoss(3, smooth=0.5)(logits, target)
    assert loss.item() == pytest.approx(
        soft_dice_loss(torch.softmax(logits, 1), target, smooth=0.5).item()
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_all_ignored_is_zero_and_bad_arguments():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = DiceLoss(3, smooth=0.0)(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        DiceLoss(3, smooth=-1.0)
    with pytest.raises(ValueError, match="num_classes=3"):
        DiceLoss(3)(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
