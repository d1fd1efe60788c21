"""Soft multi-class Dice loss over the classes present in the target."""

from __future__ import annotations

import torch
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import check_num_classes, one_hot_target


def soft_dice_loss(
    probabilities: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1.0,
) -> Tensor:
    """1 - mean over present classes c of (2 I_c + s) / (S_c + s).

    With p = ``probabilities`` and g_c the one-hot target, summed over the
    valid pixels of the whole batch: I_c = sum p_c g_c, S_c = sum p_c + sum g_c,
    and s = ``smooth``. A class is present when some valid pixel is labelled c.

    Args:
        probabilities: (B, C, H, W), rows summing to 1 (softmax of logits).
        target: (B, H, W) labels in [0, C) or ``ignore_index`` (masked out of
            every sum).
        smooth: s >= 0, keeps small classes' gradients bounded.

    Returns:
        scalar in [0, 1]; 0 (with a gradient) when no pixel is valid.
    """
    onehot, valid = one_hot_target(
        target, probabilities.shape[1], ignore_index, probabilities.dtype
    )
    masked = probabilities * valid
    intersection = (masked * onehot).sum(dim=(0, 2, 3))
    sizes = masked.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2.0 * intersection + smooth) / (sizes + smooth).clamp_min(torch.finfo(sizes.dtype).tiny)
    present = onehot.sum(dim=(0, 2, 3)) > 0
    count = present.sum()
    loss = ((1.0 - dice) * present).sum() / count.clamp_min(1)
    return loss + probabilities.sum() * 0.0


class DiceLoss(SegmentationLoss):
    """Soft Dice loss of softmax(logits) (``soft_dice_loss``).

    Args:
        num_classes: C; checked against the logits.
        ignore_index: label masked out.
        smooth: additive smoothing s >= 0 in numerator and denominator.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0
    ) -> None:
        super().__init__()
        if not smooth >= 0:
            raise ValueError(f"loss.smooth must be >= 0, found {smooth}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        check_num_classes(logits, self.num_classes)
        return soft_dice_loss(torch.softmax(logits, dim=1), target, self.ignore_index, self.smooth)
