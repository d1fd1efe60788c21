"""Segmentation losses: ``loss(logits, target, aux) -> scalar``.

Pixel losses (``CrossEntropy``, ``OhemCrossEntropy``, ``LovaszSoftmax``,
``DiceLoss``) read the logits and target; auxiliary terms
(``RayleighConsistency``, ``NoiseFloorPenalty``, ``AffinitySupervision``) read the
head's ``aux`` mapping;
``CompositeLoss`` adds weighted, warmed-up terms and returns their values for logging
(``evaluate -> LossValue(total, terms)``).
Every loss is a ``SegmentationLoss`` (``cheeger/losses/base.py``), which declares what the
module needs to know about it.
"""

from cheeger.losses.affinity import AffinitySupervision
from cheeger.losses.base import LossValue, SegmentationLoss
from cheeger.losses.composite import CompositeLoss
from cheeger.losses.cross_entropy import CrossEntropy
from cheeger.losses.dice import DiceLoss
from cheeger.losses.lovasz import LovaszSoftmax
from cheeger.losses.noise_floor import NoiseFloorPenalty
from cheeger.losses.ohem import OhemCrossEntropy
from cheeger.losses.rayleigh import RayleighConsistency

__all__ = [
    "AffinitySupervision",
    "CompositeLoss",
    "CrossEntropy",
    "DiceLoss",
    "LossValue",
    "LovaszSoftmax",
    "NoiseFloorPenalty",
    "OhemCrossEntropy",
    "RayleighConsistency",
    "SegmentationLoss",
]
