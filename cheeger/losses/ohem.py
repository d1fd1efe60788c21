"""Online hard example mining (OHEM) cross-entropy.

Only the pixels the model still gets wrong, or nearly wrong, are averaged: a
pixel is hard when its predicted probability of the target class is below a
threshold, and at least a fixed fraction of the valid pixels (the hardest
ones) is always kept so that a confident model still receives a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.cross_entropy import CrossEntropy, weighted_pixel_mean


def target_probability(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """softmax(logits)[target] per pixel, (B, H, W), detached; 1 at ignored pixels.

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) labels in [0, C) or ``ignore_index``.
    """
    with torch.no_grad():
        target = target.long()
        valid = target != ignore_index
        labels = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        log_p = torch.log_softmax(logits.detach(), dim=1).gather(1, labels).squeeze(1)
        return torch.where(valid, log_p.exp(), torch.ones_like(log_p))


def hard_pixel_mask(
    probability: Tensor, valid: Tensor, threshold: float, min_kept_fraction: float
) -> Tensor:
    """Which pixels OHEM keeps, (same shape as ``probability``), bool.

    A valid pixel is kept when ``probability < threshold`` or when it is among
    the ceil(min_kept_fraction * n_valid) valid pixels of lowest probability
    (ties broken by position). Counted over the whole batch.

    Args:
        probability: target-class probabilities, any shape.
        valid: bool, same shape; False pixels are never kept.
        threshold: in (0, 1].
        min_kept_fraction: in [0, 1].
    """
    flat = torch.where(valid, probability, torch.full_like(probability, math.inf)).reshape(-1)
    rank = torch.empty_like(flat, dtype=torch.long)
    rank[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), device=flat.device)
    # A tensor count keeps this free of device synchronisation.
    min_kept = torch.ceil(min_kept_fraction * valid.sum())
    hardest = (rank < min_kept).view_as(valid)
    return valid & ((probability < threshold) | hardest)


class OhemCrossEntropy(CrossEntropy):
    """Cross-entropy averaged over the hard pixels only (``hard_pixel_mask``).

    Args:
        num_classes, class_weights, ignore_index, label_smoothing, class_weight_power:
            as ``CrossEntropy``.
        threshold: a pixel is hard when its target-class probability is below it.
        min_kept_fraction: the hardest ``min_kept_fraction`` of the valid pixels
            of the batch are kept whatever their probability. The default 0.2
            matches the common setting of 100k kept pixels per 512x1024 crop.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar

    The value is sum_{i kept} w_{y_i} l_i / sum_{i kept} w_{y_i} with l_i the
    (label-smoothed) cross-entropy of pixel i; the selection is not
    differentiated. 0 (with a gradient) when no pixel is valid.
    """

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | str | None = None,
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        threshold: float = 0.7,
        min_kept_fraction: float = 0.2,
        class_weight_power: float = 1.0,
    ) -> None:
        super().__init__(
            num_classes, class_weights, ignore_index, label_smoothing, class_weight_power
        )
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"loss.threshold must be in (0, 1], found {threshold}")
        if not 0.0 <= min_kept_fraction <= 1.0:
            raise ValueError(f"loss.min_kept_fraction must be in [0, 1], found {min_kept_fraction}")
        self.threshold = threshold
        self.min_kept_fraction = min_kept_fraction

    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        loss, pixel_weight = self.pixel_losses(logits, target)
        probability = target_probability(logits, target, self.ignore_index)
        valid = target != self.ignore_index
        keep = hard_pixel_mask(probability, valid, self.threshold, self.min_kept_fraction)
        return weighted_pixel_mean(loss * keep, pixel_weight * keep)
