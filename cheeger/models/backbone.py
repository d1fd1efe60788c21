"""The contract between a feature extractor and ``SegmentationModule``.

A backbone maps images to a feature map and declares the three numbers the module
and the heads need before the first step: the feature channels (the head's input),
the output stride (how much smaller the feature map is; the spectral head's graph
size follows from it) and the input multiple (image sides it accepts; other sizes
are padded by the inference wrapper).
"""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class of the feature extractors (``UNet``).

    Attributes:
        out_channels: C of the returned feature map.
        output_stride: input size / feature-map size (1: full resolution).
        input_multiple: image height and width must be multiples of this (1: any size).

    Shapes:
        forward(image (B, 3, H, W)) -> (B, out_channels, H / output_stride, W / output_stride)
    """

    out_channels: int
    output_stride: int = 1
    input_multiple: int = 1

    def forward(self, image: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")
