"""The loss contract: ``evaluate`` returns the total and its terms from one call."""

import pytest
import torch

from cheeger.losses import CompositeLoss, CrossEntropy, LossValue


def test_single_loss_evaluates_to_its_forward_with_no_terms():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    loss = CrossEntropy(3)
    value = loss.evaluate(logits, target)
    assert isinstance(value, LossValue) and value.terms == {}
    assert value.total.item() == pytest.approx(loss(logits, target).item())


def test_terms_belong_to_the_call_that_returned_them():
    # No state between calls: an earlier result keeps its own terms.
    loss = CompositeLoss({"ce": {"loss": CrossEntropy(2)}})
    logits = torch.zeros(1, 2, 2, 2)
    first = loss.evaluate(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    logits[:, 0] = 5.0
    second = loss.evaluate(logits, torch.ones(1, 2, 2, dtype=torch.long))
    assert first.terms["ce"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert second.terms["ce"].item() > 4.0
    assert second.total.item() == pytest.approx(second.terms["ce"].item())
