"""Segmentation heads: ``features -> (logits, auxiliaries)``.

Every head takes the backbone's feature map (B, C, h, w) and the input image
(B, 3, H, W) (a guide for the spectral head's graph, and the output size; None
gives logits at the feature map's size) and returns logits (B, num_classes, H, W)
plus a mapping of auxiliaries (empty for ``ConvHead``; the spectral head puts its
graph, eigenvalues and embedding there) that losses and logging callbacks may read.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SegmentationHead(nn.Module):
    """Interface shared by all heads."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, found {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, found {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes

    def forward(self, features: Tensor, image: Tensor | None = None) -> tuple[Tensor, dict]:
        raise NotImplementedError

    def check_sizes(self, feature_size: tuple[int, int], image_size: tuple[int, int]) -> None:
        """ValueError when maps of these sizes cannot be processed (before any step)."""

    def _check(self, features: Tensor) -> None:
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"features must be (B, {self.in_channels}, h, w); found {tuple(features.shape)}"
            )


def output_size(features: Tensor, image: Tensor | None) -> tuple[int, int]:
    """(H, W) of the logits: the image's, or the feature map's when there is no image."""
    source = features if image is None else image
    return tuple(source.shape[-2:])


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, K, h, w) logits to (B, K, *size); identity if equal."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def dropout_layer(dropout: float) -> nn.Module:
    """``nn.Dropout2d(dropout)``, or the identity at 0: the one check of ``head.dropout``
    (every head builds its dropout here).

    Raises:
        ValueError: naming ``head.dropout``, unless 0 <= dropout < 1.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"head.dropout must be a number in [0, 1), found {dropout!r}")
    return nn.Dropout2d(float(dropout)) if dropout > 0 else nn.Identity()


class ConvHead(SegmentationHead):
    """The baseline: dropout then a 1x1 convolution per pixel, upsampled to the input.

    Shapes:
        (B, in_channels, h, w), image (B, 3, H, W) -> logits (B, num_classes, H, W), aux {}
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__(in_channels, num_classes)
        self.dropout = dropout_layer(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: Tensor, image: Tensor | None = None) -> tuple[Tensor, dict]:
        self._check(features)
        logits = self.classifier(self.dropout(features))
        return upsample_logits(logits, output_size(features, image)), {}
