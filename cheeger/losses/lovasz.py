"""Lovasz-softmax: a convex surrogate of the per-class Jaccard (IoU) loss.

Berman, Rannen Triki and Blaschko, "The Lovasz-Softmax loss", CVPR 2018. For a
class c with ground-truth set F (|F| = G) the Jaccard loss of a set M of
mispredicted pixels is

    Delta(M) = |M| / |F u M|,

a submodular set function. Its Lovasz extension evaluated at the vector of
pixel errors e_i = |[y_i = c] - p_i(c)| (p = softmax of the logits) is the
loss of class c: sort the errors in decreasing order e_(1) >= ... >= e_(n) and

    loss_c = sum_k e_(k) (Delta({(1), ..., (k)}) - Delta({(1), ..., (k-1)})),

which is piecewise linear in e, exact on 0/1 errors, and differentiable almost
everywhere (the sort is not differentiated).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import check_num_classes, one_hot_target


def lovasz_jaccard_increments(foreground: Tensor) -> Tensor:
    """Delta(first k) - Delta(first k - 1) for pixels already sorted by decreasing error.

    Args:
        foreground: (..., n) float 0/1, whether each sorted pixel belongs to the class.

    Returns:
        (..., n). With G the foreground count and a_k, b_k the foreground and
        background counts among the first k pixels, Delta(first k) =
        1 - (G - a_k) / (G + b_k).
    """
    total = foreground.sum(dim=-1, keepdim=True)
    intersection = total - foreground.cumsum(dim=-1)
    union = total + (1.0 - foreground).cumsum(dim=-1)
    jaccard = 1.0 - intersection / union.clamp_min(1.0)
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_softmax(
    probabilities: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    per_image: bool = False,
) -> Tensor:
    """Lovasz-softmax loss averaged over the classes present in the target.

    Args:
        probabilities: (B, C, H, W), rows summing to 1 (softmax of logits).
        target: (B, H, W) labels in [0, C) or ``ignore_index`` (removed).
        per_image: compute the loss of each image on its own and average over the
            images with at least one valid pixel; otherwise the batch is one set.

    Returns:
        scalar; 0 (with a gradient) when no pixel is valid.
    """
    batch, num_classes = probabilities.shape[:2]
    foreground, valid = one_hot_target(target, num_classes, ignore_index, probabilities.dtype)
    # Ignored pixels get error 0 and no foreground: they sort after every positive
    # error and a zero error contributes nothing, so this equals removing them.
    errors = (foreground - probabilities).abs() * valid
    groups = batch if per_image else 1
    errors = errors.transpose(0, 1).reshape(num_classes, groups, -1).transpose(0, 1)
    foreground = foreground.transpose(0, 1).reshape(num_classes, groups, -1).transpose(0, 1)
    sorted_errors, order = errors.sort(dim=-1, descending=True)
    increments = lovasz_jaccard_increments(foreground.gather(-1, order))
    per_class = (sorted_errors * increments).sum(dim=-1)  # (groups, C)
    present = foreground.sum(dim=-1) > 0
    counts = present.sum(dim=-1)  # (groups,)
    per_group = (per_class * present).sum(dim=-1) / counts.clamp_min(1)
    used = counts > 0
    mean = (per_group * used).sum() / used.sum().clamp_min(1)
    return mean + probabilities.sum() * 0.0


class LovaszSoftmax(SegmentationLoss):
    """Lovasz-softmax loss of softmax(logits) (``lovasz_softmax``).

    Args:
        num_classes: C; checked against the logits.
        ignore_index: label removed before the loss.
        per_image: per-image loss averaged over images, instead of one set per batch.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, per_image: bool = False
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_image = per_image

    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        check_num_classes(logits, self.num_classes)
        probabilities = torch.softmax(logits, dim=1)
        return lovasz_softmax(probabilities, target, self.ignore_index, self.per_image)
