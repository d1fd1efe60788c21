"""Pixel-wise cross-entropy with an ignore label and optional class weights.

The functional core is shared with ``cheeger.losses.ohem``: ``pixel_cross_entropy``
gives every pixel its weighted loss and its weight, and ``weighted_pixel_mean``
reduces any subset of them the way ``F.cross_entropy(reduction="mean")`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import check_num_classes

MEDIAN_FREQUENCY = "median_frequency"


def pixel_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Per-pixel weighted cross-entropy and per-pixel weights.

    Args:
        logits: (B, C, H, W) float.
        target: (B, H, W) integer labels in [0, C) or ``ignore_index``.
        weight: optional (C,) class weights w.
        ignore_index: label that contributes nothing.
        label_smoothing: epsilon of ``F.cross_entropy``.

    Returns:
        ``(loss, pixel_weight)``, both (B, H, W): with p = softmax(logits) and
        y the target at a pixel, loss = (1 - eps) w_y (-log p_y)
        + (eps / C) sum_c w_c (-log p_c) and pixel_weight = w_y (w = 1 without
        class weights); both are 0 at ignored pixels. ``loss.sum() /
        pixel_weight.sum()`` is ``F.cross_entropy``'s mean.
    """
    target = target.long()
    if weight is not None:
        weight = weight.to(logits.dtype)
    loss = F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    valid = target != ignore_index
    if weight is None:
        return loss, valid.to(loss.dtype)
    labels = torch.where(valid, target, torch.zeros_like(target))
    return loss, weight[labels] * valid


def weighted_pixel_mean(loss: Tensor, pixel_weight: Tensor) -> Tensor:
    """sum(loss) / sum(pixel_weight), and 0 (with a gradient) when no weight is left.

    Args:
        loss, pixel_weight: the same shape (from ``pixel_cross_entropy``, possibly
            with pixels zeroed in both).
    """
    total = pixel_weight.sum()
    summed = loss.sum()
    # torch.where instead of a Python branch: no device synchronisation.
    safe = summed / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, safe, summed * 0.0)


class CrossEntropy(SegmentationLoss):
    """Cross-entropy over pixels, ignoring ``ignore_index``.

    Args:
        num_classes: C; checked against the logits.
        class_weights: None, C weights, or ``"median_frequency"``: weights computed
            from the training split's label histogram when fitting starts
            (``set_class_weights``; see ``cheeger.data.statistics``). Stored in
            the state dict, so a resumed or evaluated model uses the same ones.
        ignore_index: target value that contributes nothing.
        label_smoothing: passed to ``F.cross_entropy``.
        class_weight_power: p in (0, 1]: dataset-derived weights are installed as w_c^p
            (0.5 softens median-frequency balancing, so thin classes are learned without
            the large classes being over-run; 1 keeps it as is).

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar

    The value is sum_i w_{y_i} l_i / sum_i w_{y_i} over non-ignored pixels i. A
    batch whose pixels are all ignored gives 0 (with a gradient), not NaN.
    """

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | str | None = None,
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        class_weight_power: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < class_weight_power <= 1.0:
            raise ValueError(
                f"loss.class_weight_power must be in (0, 1], found {class_weight_power!r}"
            )
        self.class_weight_power = float(class_weight_power)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        weight = None
        self.needs_dataset_weights = isinstance(class_weights, str)
        if self.needs_dataset_weights:
            if class_weights != MEDIAN_FREQUENCY:
                raise ValueError(
                    f"loss.class_weights must be a list, null or '{MEDIAN_FREQUENCY}', "
                    f"found {class_weights!r}"
                )
            self.register_buffer("weight", torch.ones(num_classes))
            return
        if class_weights is not None:
            weight = torch.as_tensor(list(class_weights), dtype=torch.float32)
            if weight.shape != (num_classes,):
                raise ValueError(
                    f"loss.class_weights must have num_classes={num_classes} entries, "
                    f"found {weight.numel()}"
                )
            if bool((weight < 0).any()) or not bool(torch.isfinite(weight).all()):
                raise ValueError("loss.class_weights must be finite and non-negative")
        self.register_buffer("weight", weight, persistent=False)

    def set_class_weights(self, weights: Tensor) -> None:
        """Install dataset-derived class weights (C,) (for ``class_weights='median_frequency'``),
        raised to ``class_weight_power``."""
        weights = torch.as_tensor(weights, dtype=torch.float32) ** self.class_weight_power
        if weights.shape != (self.num_classes,):
            raise ValueError(
                f"class weights must have num_classes={self.num_classes} entries, "
                f"found shape {tuple(weights.shape)}"
            )
        self.weight = weights.to(self.weight.device if self.weight is not None else "cpu")

    def pixel_losses(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``pixel_cross_entropy`` with this loss's weights, after checking the logits."""
        check_num_classes(logits, self.num_classes)
        return pixel_cross_entropy(
            logits, target, self.weight, self.ignore_index, self.label_smoothing
        )

    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        return weighted_pixel_mean(*self.pixel_losses(logits, target))
