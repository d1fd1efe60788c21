"""Segmentation losses: ``loss(logits, target, aux) -> scalar``."""

from cheeger.losses.cross_entropy import CrossEntropy
from cheeger.losses.dice import DiceLoss
from cheeger.losses.lovasz import LovaszSoftmax
from cheeger.losses.ohem import OhemCrossEntropy

__all__ = [
    "CrossEntropy",
    "DiceLoss",
    "LovaszSoftmax",
    "OhemCrossEntropy",
]
