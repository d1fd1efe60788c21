"""mIoU against an independent numpy computation, with ignore pixels and absent classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cheeger.metrics.iou import (
    SegmentationIoU,
    confusion_matrix,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)


def numpy_miou(preds, targets, num_classes, ignore=255):
    """Cityscapes-style dataset mIoU computed with per-class boolean masks."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for p, t in zip(preds, targets, strict=True):
        valid = t != ignore
        for c in range(num_classes):
            pc, tc = (p == c) & valid, (t == c) & valid
            inter[c] += np.logical_and(pc, tc).sum()
            union[c] += np.logical_or(pc, tc).sum()
    ious = [inter[c] / union[c] for c in range(num_classes) if union[c] > 0]
    correct = sum(((p == t) & (t != ignore)).sum() for p, t in zip(preds, targets, strict=True))
    total = sum((t != ignore).sum() for t in targets)
    return float(np.mean(ious)), correct / total, inter, union


@pytest.mark.parametrize("seed", range(5))
def test_streaming_miou_matches_numpy(seed, device):
    rng = np.random.default_rng(seed)
    num_classes = 6
    preds, targets = [], []
    metric = SegmentationIoU(num_classes).to(device)
    for _ in range(4):
        t = rng.integers(0, num_classes - 1, size=(2, 9, 13))  # class 5 never in GT
        t[rng.random(t.shape) < 0.2] = 255
        p = np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, num_classes, size=t.shape))
        p[p == 255] = 0
        p[p == 3] = 2  # class 3 never predicted
        preds.append(p)
        targets.append(t)
        metric.update(torch.from_numpy(p).to(device), torch.from_numpy(t).to(device))
    assert metric.confmat.device.type == device
    expected_miou, expected_acc, inter, union = numpy_miou(preds, targets, num_classes)
    out = {key: value.cpu() for key, value in metric.compute().items()}
    assert out["miou"].item() == pytest.approx(expected_miou, abs=1e-12)
    assert out["pixel_acc"].item() == pytest.approx(expected_acc, abs=1e-12)
    assert out["confmat"].sum().item() == sum(int((t != 255).sum()) for t in targets)
    for c in range(num_classes):
        if union[c] == 0:
            assert math.isnan(out["iou"][c].item())
        else:
            assert out["iou"][c].item() == pytest.approx(inter[c] / union[c], abs=1e-12)


def test_hand_computed_example():
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    target = torch.tensor([[0, 1, 1], [255, 2, 0]])
    cm = confusion_matrix(pred, target, num_classes=4)
    # rows = ground truth: class 0 -> {0: 1, 2: 1}; class 1 -> {0: 1, 1: 1}; class 2 -> {2: 1}
    assert cm.tolist() == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    iou = per_class_iou(cm)
    assert iou[0].item() == pytest.approx(1 / 3)
    assert iou[1].item() == pytest.approx(1 / 2)
    assert iou[2].item() == pytest.approx(1 / 2)
    assert math.isnan(iou[3].item())  # absent from GT and prediction: excluded
    assert mean_iou(cm).item() == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert pixel_accuracy(cm).item() == pytest.approx(3 / 5)


def test_predicted_but_absent_class_counts_as_zero():
    target = torch.zeros(4, 4, dtype=torch.long)
    pred = target.clone()
    pred[0, 0] = 1
    out = mean_iou(confusion_matrix(pred, target, 3))
    assert out.item() == pytest.approx((15 / 16 + 0.0) / 2)


def test_identity_and_all_wrong():
    target = torch.randint(0, 5, (3, 8, 8))
    assert mean_iou(confusion_matrix(target, target, 5)).item() == 1.0
    assert mean_iou(confusion_matrix((target + 1) % 5, target, 5)).item() == 0.0


def test_logits_are_argmaxed_and_ignore_only_pixels_give_nan():
    metric = SegmentationIoU(3)
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 2] = 1.0
    metric.update(logits, torch.full((1, 2, 2), 2))
    assert metric.compute()["miou"].item() == 1.0
    empty = SegmentationIoU(3)
    empty.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    assert math.isnan(empty.compute()["miou"].item())


def test_labels_outside_class_set_are_an_error():
    with pytest.raises(ValueError, match="outside the class set"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(
            torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 3
        )
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 3)


def test_state_is_a_sum_so_merging_equals_one_pass():
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.integers(0, 4, size=(4, 6, 6)))
    p = torch.from_numpy(rng.integers(0, 4, size=(4, 6, 6)))
    one = SegmentationIoU(4)
    one.update(p, t)
    a, b = SegmentationIoU(4), SegmentationIoU(4)
    a.update(p[:2], t[:2])
    b.update(p[2:], t[2:])
    a.merge_state(b)  # what a cross-process sum does
    assert torch.equal(a.confmat, one.confmat)
    assert a.compute()["miou"].item() == one.compute()["miou"].item()
