from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.losses import LovaszSoftmax
from cheeger.losses.lovasz import lovasz_softmax

# Image 0: two pixels labelled 0 and 1; image 1: one pixel labelled 2. Class probabilities:
P1, P2, P3 = (0.8, 0.1, 0.1), (0.4, 0.5, 0.1), (0.3, 0.2, 0.5)


def batch_of_two() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 3, 1, 2) probabilities and (2, 1, 2) labels; image 1's second pixel is ignored."""
    probs = torch.tensor([[P1, P2], [P3, (0.9, 0.05, 0.05)]], dtype=torch.float64)
    probs = probs.permute(0, 2, 1).unsqueeze(2)
    target = torch.tensor([[[0, 1]], [[2, 255]]])
    return probs, target


def test_per_image_by_hand():
    probs, target = batch_of_two()
    # Image 0, class 0: errors (0.2, 0.4); by decreasing error the sets {P2}, {P2, P1}
    # have Jaccard losses |M| / |F u M| = 1/2, 2/2: 0.4 * 1/2 + 0.2 * (1 - 1/2) = 0.3.
    # Class 1: errors (0.1, 0.5); sets {P2}, {P2, P1}: 1/1, 2/2 -> 0.5 * 1 + 0.1 * 0 = 0.5.
    # Class 2 is absent from image 0. Image 1: class 2 only, error 0.5 -> 0.5.
    value = lovasz_softmax(probs, target, per_image=True)
    assert value.item() == pytest.approx(((0.3 + 0.5) / 2 + 0.5) / 2)


def test_batch_as_one_set_by_hand():
    probs, target = batch_of_two()
    # Class 0 over P1, P2, P3: errors (0.2, 0.4, 0.3); decreasing: P2, P3, P1 with
    # Jaccard losses 1/2, 2/3, 3/3 -> 0.4 * 1/2 + 0.3 * 1/6 + 0.2 * 1/3.
    class0 = 0.4 / 2 + 0.3 / 6 + 0.2 / 3
    # Class 1: errors (0.1, 0.5, 0.2); P2 first (a foreground pixel): 1, 1, 1 -> 0.5.
    # Class 2: errors (0.1, 0.1, 0.5); P3 first: 1, 1, 1 -> 0.5.
    value = lovasz_softmax(probs, target, per_image=False)
    assert value.item() == pytest.approx((class0 + 0.5 + 0.5) / 3)


def jaccard_loss_of_set(mispredicted: set[int], foreground: set[int]) -> float:
    union = foreground | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def lovasz_extension_oracle(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over present classes of the Lovasz extension written as an integral over
    level sets: sum_k (e_(k) - e_(k+1)) Delta({(1), ..., (k)}), with e_(n+1) = 0."""
    losses = []
    for c in range(probs.shape[1]):
        foreground = set(np.flatnonzero(labels == c).tolist())
        if not foreground:
            continue
        errors = np.abs((labels == c).astype(float) - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        levels = np.append(errors[order], 0.0)
        losses.append(
            sum(
                (levels[k] - levels[k + 1])
                * jaccard_loss_of_set(set(order[: k + 1].tolist()), foreground)
                for k in range(len(order))
            )
        )
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", range(3))
def test_equals_level_set_integral_of_the_jaccard_loss(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 4, 3, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 3, 5), generator=g)  # class 3 absent
    target[0, 0, :2] = 255
    value = LovaszSoftmax(num_classes=4)(logits, target)
    valid = (target != 255).flatten()
    probs = torch.softmax(logits, 1).flatten(2)[0].T.numpy()[valid.numpy()]
    expected = lovasz_extension_oracle(probs, target.flatten()[valid].numpy())
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_one_hot_predictions_give_one_minus_iou():
    # On 0/1 errors the extension is the Jaccard loss itself: mean over present classes of 1 - IoU.
    target = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 1, 0]]])
    onehot = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).double()
    # IoU: class 0: 1 / 2; class 1: 2 / 4; class 2: 0 / 1
    expected = ((1 - 1 / 2) + (1 - 2 / 4) + (1 - 0)) / 3
    assert lovasz_softmax(onehot, target).item() == pytest.approx(expected)


def test_gradient_flows_and_all_ignored_is_zero():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    LovaszSoftmax(3)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    logits.grad = None
    loss = LovaszSoftmax(3, per_image=True)(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="num_classes=4"):
        LovaszSoftmax(4)(logits, target)
