"""Segmentation losses: ``loss(logits, target, aux) -> scalar``."""

from cheeger.losses.cross_entropy import CrossEntropy
from cheeger.losses.dice import DiceLoss
from cheeger.losses.lovasz import LovaszSoftmax
from cheeger.losses.noise_floor import NoiseFloorPenalty
from cheeger.losses.ohem import OhemCrossEntropy
from cheeger.losses.rayleigh import RayleighConsistency

__all__ = [
    "CrossEntropy",
    "DiceLoss",
    "LovaszSoftmax",
    "NoiseFloorPenalty",
    "OhemCrossEntropy",
    "RayleighConsistency",
]
