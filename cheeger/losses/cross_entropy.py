"""Pixel-wise cross-entropy with an ignore label and optional class weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cheeger.data.classes import IGNORE_INDEX

MEDIAN_FREQUENCY = "median_frequency"


class CrossEntropy(nn.Module):
    """Cross-entropy over pixels, ignoring ``ignore_index``.

    Args:
        num_classes: C; checked against the logits.
        class_weights: None, C weights, or ``"median_frequency"``: weights computed
            from the training split's label histogram when fitting starts
            (``set_class_weights``; see ``cheeger.data.statistics``). Stored in
            the state dict, so a resumed or evaluated model uses the same ones.
        ignore_index: target value that contributes nothing.
        label_smoothing: passed to ``F.cross_entropy``.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar

    A batch whose pixels are all ignored gives 0 (with a gradient), not NaN.
    """

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | str | None = None,
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
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
        """Install dataset-derived class weights (C,) (for ``class_weights='median_frequency'``)."""
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (self.num_classes,):
            raise ValueError(
                f"class weights must have num_classes={self.num_classes} entries, "
                f"found shape {tuple(weights.shape)}"
            )
        self.weight = weights.to(self.weight.device if self.weight is not None else "cpu")

    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} channels, expected num_classes={self.num_classes}"
            )
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits,
            target.long(),
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
