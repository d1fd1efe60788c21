"""The metrics of one stage, grouped in a torchmetrics ``MetricCollection``.

Every metric's ``compute`` returns the same shape, ``dict[str, Tensor]`` keyed by the
``StageResult`` fields it fills, so the collection's merged dict is the result:

    SegmentationIoU -> miou, pixel_acc, iou, confmat        (every stage)
    BoundaryIoU     -> boundary_iou, boundary_iou_per_class (val, test)
    BFScore         -> bf, bf_per_class                     (val, test)
    TrimapIoU       -> trimap                               (val, test)
    EdgeAUC         -> edge_auc                             (val, test, heads with a graph)

The label metrics read (pred, target) and share one ``update``; ``EdgeAUC`` reads the
head's pixel graph instead, so it sits beside the collection and counts only when the
head returns a graph (its field stays None otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torchmetrics import MetricCollection

from cheeger.data.classes import IGNORE_INDEX
from cheeger.metrics.boundary import BFScore, BoundaryIoU, TrimapIoU
from cheeger.metrics.edges import EdgeAUC
from cheeger.metrics.iou import SegmentationIoU
from cheeger.metrics.results import StageResult


class StageMetrics(nn.Module):
    """update(pred, target, aux) per batch; ``compute() -> StageResult`` per epoch.

    Args:
        num_classes, ignore_index: of the labels.
        boundaries: also measure Boundary IoU, BF, trimap IoU and the graph's edge AUC
            (val and test; training measures the region scores only).
        dilation_ratio, bf_tolerance, trimap_widths: the boundary metrics' settings.

    Shapes:
        update(pred (B, H, W) labels, target (B, H, W), aux mapping or None)
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        boundaries: bool = True,
        dilation_ratio: float = 0.02,
        bf_tolerance: float = 2.0,
        trimap_widths: Sequence[int] = (1, 2, 4, 8, 16),
    ) -> None:
        super().__init__()
        members = {"iou": SegmentationIoU(num_classes, ignore_index)}
        if boundaries:
            members["boundary_iou"] = BoundaryIoU(num_classes, dilation_ratio, ignore_index)
            members["bf"] = BFScore(num_classes, bf_tolerance, ignore_index)
            members["trimap"] = TrimapIoU(num_classes, trimap_widths, ignore_index)
        # compute_groups off: two metrics whose states merely look alike must never merge.
        self.labels = MetricCollection(members, compute_groups=False)
        self.graph = EdgeAUC(ignore_index) if boundaries else None

    @property
    def update_called(self) -> bool:
        return self.labels["iou"].update_called

    def update(self, pred: Tensor, target: Tensor, aux: Mapping[str, Any] | None = None) -> None:
        self.labels.update(pred, target)
        if self.graph is not None and aux is not None and "graph" in aux and "graph_size" in aux:
            self.graph.update(aux["graph"], target, aux["graph_size"])

    def compute(self) -> StageResult:
        """The epoch's scores (synced across ranks by each metric), detached on the CPU."""
        scores = dict(self.labels.compute())
        if self.graph is not None and self.graph.update_called:
            scores.update(self.graph.compute())
        scores = {name: value.detach().cpu() for name, value in scores.items()}
        if "trimap" in scores:
            widths = self.labels["trimap"].widths
            scores["trimap"] = dict(zip(widths, scores["trimap"].unbind(), strict=True))
        return StageResult(**scores)

    def reset(self) -> None:
        self.labels.reset()
        if self.graph is not None:
            self.graph.reset()
