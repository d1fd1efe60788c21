"""Dataset-level intersection-over-union from an accumulated confusion matrix.

This is the Cityscapes convention, not torchmetrics' ``MeanIoU`` (which averages
per image and has no ignore label):

* one confusion matrix is summed over every pixel of the dataset;
* pixels whose target is ``ignore_index`` are never counted, on either side;
* IoU_c = TP_c / (TP_c + FP_c + FN_c);
* classes with TP + FP + FN = 0 (absent from both ground truth and prediction)
  are excluded from the mean (their IoU is NaN), every other class counts,
  including classes that were predicted but never present (IoU 0).

The functional pieces work on any device with float64 (not MPS); ``SegmentationIoU``
keeps the matrix as a ``sum``-reduced state so data-parallel runs give the
single-process result, and computes its ratios on the CPU.

Example:
    >>> import torch
    >>> pred = torch.tensor([[0, 1], [1, 1]])
    >>> target = torch.tensor([[0, 1], [0, 255]])
    >>> cm = confusion_matrix(pred, target, num_classes=2)
    >>> cm.tolist()
    [[1, 1], [0, 1]]
    >>> round(mean_iou(cm).item(), 4)
    0.5
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from cheeger.data.classes import IGNORE_INDEX


def _validate(pred: Tensor, target: Tensor, num_classes: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (labels, not logits); "
            f"found pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError(
            f"pred and target must be integer label maps; found dtypes {pred.dtype}, {target.dtype}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, found {num_classes}")


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Confusion matrix of integer label maps.

    Args:
        pred: (...) predicted class ids in [0, num_classes).
        target: (...) ground-truth ids in [0, num_classes) or ``ignore_index``.
        num_classes: number of classes C.
        ignore_index: target value excluded from counting.

    Returns:
        (C, C) int64 matrix, rows = ground truth, columns = prediction.

    Raises:
        ValueError: shape/dtype mismatch, or a target value that is neither a
            class id nor ``ignore_index`` (a silent wrong metric otherwise).
    """
    _validate(pred, target, num_classes)
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel():
        bad = (target < 0) | (target >= num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"target holds label {int(target[bad][0])} outside the class set "
                f"[0, {num_classes}) and is not ignore_index={ignore_index}"
            )
        bad = (pred < 0) | (pred >= num_classes)
        if bool(bad.any()):
            raise ValueError(f"pred holds class {int(pred[bad][0])} outside [0, {num_classes})")
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_iou(confmat: Tensor) -> Tensor:
    """IoU per class from a (C, C) confusion matrix: (C,) float64, NaN where undefined."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    union = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confmat: Tensor) -> Tensor:
    """Mean IoU over classes present in ground truth or prediction (float64 scalar).

    NaN when nothing was counted.
    """
    return per_class_iou(confmat).nanmean()


def pixel_accuracy(confmat: Tensor) -> Tensor:
    """Fraction of counted pixels labelled correctly (float64 scalar)."""
    confmat = confmat.double()
    total = confmat.sum()
    return confmat.diagonal().sum() / total if total > 0 else total.new_tensor(float("nan"))


class SegmentationIoU(Metric):
    """Stateful mIoU / per-class IoU / pixel accuracy over a whole dataset.

    ``update(pred, target)`` takes label maps (B, H, W) or logits (B, C, H, W)
    (argmax over C). ``compute()`` returns the ``StageResult`` fields ``miou``
    (scalar), ``pixel_acc`` (scalar), ``iou`` ((C,) with NaN for undefined classes) and
    ``confmat`` ((C, C) counts, rows ground truth).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, found {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.is_floating_point() and pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        self.confmat += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        # Float64 ratios of a CPU copy of the counts: MPS has no float64 (and C x C is small).
        confmat = self.confmat.cpu()
        return {
            "miou": mean_iou(confmat),
            "pixel_acc": pixel_accuracy(confmat),
            "iou": per_class_iou(confmat),
            "confmat": confmat.clone(),
        }
