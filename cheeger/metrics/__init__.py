"""Segmentation metrics: functional cores and torchmetrics ``Metric`` shells."""

from cheeger.metrics.iou import (
    SegmentationIoU,
    confusion_matrix,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

__all__ = ["SegmentationIoU", "confusion_matrix", "mean_iou", "per_class_iou", "pixel_accuracy"]
