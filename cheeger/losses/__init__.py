"""Segmentation losses: ``loss(logits, target, aux) -> scalar``."""

from cheeger.losses.cross_entropy import CrossEntropy
from cheeger.losses.ohem import OhemCrossEntropy

__all__ = [
    "CrossEntropy",
    "OhemCrossEntropy",
]
