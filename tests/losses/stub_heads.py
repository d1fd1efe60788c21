"""A stand-in for head=spectral in loss tests: a 1x1 conv head that also returns the
auxiliaries the spectral head provides, so that the spectral loss terms can be
trained end to end before that head exists."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cheeger.models.heads import SegmentationHead, upsample_logits
from cheeger.ops.grid import grid_graph


class AuxStubHead(SegmentationHead):
    """Conv logits plus aux {graph, laplacian, feature_logits, noise_energy}.

    The graph is the bilateral 3x3-window graph of the features with a learned
    bandwidth; ``noise_energy`` is a differentiable stand-in in (0, 1).
    """

    def __init__(self, in_channels: int, num_classes: int, laplacian: str = "symmetric") -> None:
        super().__init__(in_channels, num_classes)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.laplacian = laplacian

    def forward(self, features: Tensor, size: tuple[int, int]) -> tuple[Tensor, dict]:
        self._check(features)
        feature_logits = self.classifier(features)
        aux = {
            "graph": grid_graph(features, radius=1, sigma_feature=self.log_sigma.exp()),
            "laplacian": self.laplacian,
            "feature_logits": feature_logits,
            "noise_energy": torch.sigmoid(feature_logits.mean(dim=(1, 2, 3))),
        }
        return upsample_logits(feature_logits, size), aux
