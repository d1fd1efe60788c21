"""Segmentation losses: ``loss(logits, target, aux) -> scalar``."""

from cheeger.losses.cross_entropy import CrossEntropy

__all__ = ["CrossEntropy"]
