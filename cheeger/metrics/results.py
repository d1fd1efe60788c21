"""What one stage (train, val, test) of a run measured, as one typed object.

``SegmentationModule`` fills a ``StageResult`` at the end of each epoch from its metrics
(``SegmentationModule.results[stage]``); the callbacks, the printed tables and the entry
points read its fields instead of string keys. Tensors are detached and on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class StageResult:
    """The scores of one stage's epoch.

    Attributes:
        iou: (C,) per-class IoU; NaN for a class absent from ground truth and prediction.
        miou: mean over the classes that occur.
        pixel_acc: the share of valid pixels predicted right.
        confmat: (C, C) confusion matrix, rows ground truth.
        boundary_iou, bf: their means (None on train, which measures no boundaries).
        boundary_iou_per_class, bf_per_class: (C,), NaN like ``iou``.
        trimap: band width (px) -> mIoU inside that band around the true boundaries.
        edge_auc: how well the head's graph separates the labels (spectral heads only).
    """

    iou: Tensor
    miou: Tensor
    pixel_acc: Tensor
    confmat: Tensor
    boundary_iou: Tensor | None = None
    boundary_iou_per_class: Tensor | None = None
    bf: Tensor | None = None
    bf_per_class: Tensor | None = None
    trimap: dict[int, Tensor] = field(default_factory=dict)
    edge_auc: Tensor | None = None
