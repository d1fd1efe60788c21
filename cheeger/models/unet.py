"""U-Net backbone that returns a dense feature map (no classifier).

The encoder halves the resolution ``depth`` times, doubling the width each time
(capped at ``max_channels``); the decoder upsamples back with skip connections.
``output_stride`` stops the decoder early, so the feature map is
(B, out_channels, H / output_stride, W / output_stride): a spectral head's graph
has one node per feature-map pixel, and this knob sets that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cheeger.models.backbone import Backbone
from cheeger.ops.checks import check_int

NORMS = ("batch", "group", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: batch, group (8 groups or fewer), instance, none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, found {kind!r}")


class ConvBlock(nn.Sequential):
    """Two 3x3 conv -> norm -> ReLU layers."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(Backbone):
    """U-Net feature extractor.

    Args:
        in_channels: image channels (3 for RGB).
        base_channels: width of the first stage; stage s has
            ``min(base_channels * 2**s, max_channels)`` channels.
        depth: number of downsampling steps (>= 1). Input H and W must be
            divisible by ``2**depth``.
        norm: batch | group | instance | none.
        output_stride: 1, 2, 4, ... <= 2**depth: resolution of the returned
            feature map relative to the input.
        max_channels: cap on the stage width.
        channels_last: run the convolutions in channels-last (NHWC) memory layout
            (faster per training step on CPU, experiments/results/bench_unet_layout.md;
            also what tensor cores prefer); the
            returned feature map is contiguous NCHW either way.

    Shapes:
        forward: (B, in_channels, H, W) -> (B, out_channels, H/output_stride, W/output_stride)
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 32,
        depth: int = 4,
        norm: str = "batch",
        output_stride: int = 1,
        max_channels: int = 512,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        depth = check_int("model.depth", depth, 1)
        base_channels = check_int("model.base_channels", base_channels, 1)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, found {norm!r}")
        valid_strides = [2**s for s in range(depth + 1)]
        if output_stride not in valid_strides:
            raise ValueError(
                f"model.output_stride must be one of {valid_strides} for model.depth={depth}, "
                f"found {output_stride}"
            )
        widths = [min(base_channels * 2**s, max_channels) for s in range(depth + 1)]
        self.depth = depth
        self.output_stride = output_stride
        self.stem = ConvBlock(in_channels, widths[0], norm)
        self.down = nn.ModuleList(ConvBlock(widths[s], widths[s + 1], norm) for s in range(depth))
        # Decoder stage s goes from level s+1 to level s; stop at the output level.
        out_level = output_stride.bit_length() - 1
        self.up = nn.ModuleList(
            ConvBlock(widths[s + 1] + widths[s], widths[s], norm)
            for s in reversed(range(out_level, depth))
        )
        self.out_channels = widths[out_level]
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this: 2**depth."""
        return 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        factor = self.input_multiple
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"input height and width must be divisible by 2**depth = {factor}; "
                f"found {tuple(x.shape[-2:])}"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return y.contiguous()
