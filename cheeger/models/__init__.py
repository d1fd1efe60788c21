"""Backbones and heads (the nn.Modules that own parameters)."""

from cheeger.models.heads import ConvHead, SegmentationHead
from cheeger.models.unet import UNet

__all__ = ["ConvHead", "SegmentationHead", "UNet"]
