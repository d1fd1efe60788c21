"""Boundary-aware segmentation metrics: Boundary IoU, BF score and trimap IoU.

All three are computed in torch on batches of label maps (B, H, W) (any
device, no per-image Python loop) and accumulated as per-class sums over the
whole dataset, so the stateful ``Metric`` shells sync across processes by
summation. Pixels whose ground truth is ``ignore_index`` are excluded on both
sides.

Boundary IoU (Cheng et al., CVPR 2021). For a binary mask M, its inner boundary
band of width d is ``M - erode(M, d)``, where the erosion applies a 3x3 square
structuring element d times to M zero-padded by one pixel, so an object that
touches the image border has a boundary there. d depends on the image:
``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))``. Per class c, with G and
P the ground-truth and predicted masks of c and G_d, P_d their bands:

    BIoU_c = sum |G_d ∩ P_d| / sum |G_d ∪ P_d|      (sums over all images)

(the bands lie inside their masks, so this is the intersection over union of
(G_d ∩ G) and (P_d ∩ P) of the definition). The mean runs over classes with a
non-empty union, like mIoU.

BF score (Csurka et al., BMVC 2013). The boundary of a mask is its 1-pixel inner
band (``M - erode(M, 1)``, border-touching edges included). A predicted boundary
pixel is a hit if a ground-truth boundary pixel of the same class lies within
Euclidean distance ``tolerance``, and conversely for recall. Per class:
precision = hits_P / |∂P|, recall = hits_G / |∂G| (sums over the dataset),
BF_c = 2 P R / (P + R); the mean runs over classes with any boundary pixel.

Trimap IoU (Kohli et al. 2009; the DeepLab boundary study). The trimap of width
w is the set of pixels within chessboard distance w of a ground-truth label
change (pixels whose 3x3 neighbourhood holds another valid label). mIoU is
computed on those pixels only, for each width in a list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from cheeger.data.classes import IGNORE_INDEX
from cheeger.metrics.iou import confusion_matrix, per_class_iou


def _check_labels(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred and target must both be (B, H, W) label maps; "
            f"found {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def boundary_width(height: int, width: int, dilation_ratio: float) -> int:
    """Band width d = max(1, round(dilation_ratio * image diagonal))."""
    if dilation_ratio <= 0:
        raise ValueError(f"dilation_ratio must be > 0, found {dilation_ratio}")
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def erode(masks: Tensor, d: int) -> Tensor:
    """Binary erosion of (..., H, W) bool masks by a (2d+1)^2 square, zero outside the image.

    Equal to d erosions by a 3x3 square on the zero-padded mask.
    """
    shape = masks.shape
    x = (~masks).reshape(-1, 1, *shape[-2:]).float()
    # Outside the image counts as background: pad the complement with ones.
    x = F.pad(x, (d, d, d, d), value=1.0)
    hit = F.max_pool2d(x, kernel_size=2 * d + 1, stride=1)
    return (hit == 0).reshape(shape)


def inner_band(masks: Tensor, d: int) -> Tensor:
    """``M - erode(M, d)`` for (..., H, W) bool masks."""
    return masks & ~erode(masks, d)


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) labels -> (B, C, H, W) bool; ids outside [0, C) give all-False."""
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == classes


def boundary_iou_stats(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    dilation_ratio: float = 0.02,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """Per-class Boundary IoU intersection and union counts of a batch.

    Args:
        pred, target: (B, H, W) integer label maps.

    Returns:
        (intersection (C,), union (C,)) int64 sums over the batch.
    """
    _check_labels(pred, target)
    d = boundary_width(target.shape[-2], target.shape[-1], dilation_ratio)
    valid = (target != ignore_index).unsqueeze(1)
    g = inner_band(_one_hot(target, num_classes), d) & valid
    p = inner_band(_one_hot(pred, num_classes), d) & valid
    inter = (g & p).sum(dim=(0, 2, 3))
    union = (g | p).sum(dim=(0, 2, 3))
    return inter, union


def _disk(radius: float, device: torch.device) -> Tensor:
    r = int(math.floor(radius))
    yy, xx = torch.meshgrid(
        torch.arange(-r, r + 1, device=device),
        torch.arange(-r, r + 1, device=device),
        indexing="ij",
    )
    return ((yy**2 + xx**2) <= radius**2).float()


def dilate_disk(masks: Tensor, radius: float) -> Tensor:
    """Binary dilation of (..., H, W) bool masks by a Euclidean disk of ``radius`` pixels."""
    if radius < 0:
        raise ValueError(f"tolerance must be >= 0, found {radius}")
    if radius < 1:
        return masks
    shape = masks.shape
    kernel = _disk(radius, masks.device)
    r = kernel.shape[-1] // 2
    x = masks.reshape(-1, 1, *shape[-2:]).float()
    hit = F.conv2d(x, kernel.view(1, 1, *kernel.shape), padding=r)
    return (hit > 0.5).reshape(shape)


def bf_stats(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    tolerance: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Per-class BF counts of a batch: (4, C) int64 rows
    [predicted boundary hits, predicted boundary total, GT boundary hits, GT boundary total].
    """
    _check_labels(pred, target)
    valid = (target != ignore_index).unsqueeze(1)
    g = inner_band(_one_hot(target, num_classes), 1) & valid
    p = inner_band(_one_hot(pred, num_classes), 1) & valid
    p_hits = (p & dilate_disk(g, tolerance)).sum(dim=(0, 2, 3))
    g_hits = (g & dilate_disk(p, tolerance)).sum(dim=(0, 2, 3))
    return torch.stack([p_hits, p.sum(dim=(0, 2, 3)), g_hits, g.sum(dim=(0, 2, 3))])


def label_edges(target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(B, H, W) -> bool: valid pixels with a different valid label in their 3x3 neighbourhood."""
    t = target.long().unsqueeze(1)
    big = torch.iinfo(torch.long).max
    valid = t != ignore_index
    hi = torch.where(valid, t, torch.full_like(t, -1))
    lo = torch.where(valid, t, torch.full_like(t, big))
    # Max / min label over the neighbourhood (ignored pixels neutral, image border neutral).
    nmax = F.max_pool2d(F.pad(hi.float(), (1, 1, 1, 1), value=-1.0), 3, stride=1)
    nmin = -F.max_pool2d(F.pad(-lo.float(), (1, 1, 1, 1), value=-float(big)), 3, stride=1)
    edge = (nmax > t.float()) | (nmin < t.float())
    return (edge & valid).squeeze(1)


def trimap_band(target: Tensor, width: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(B, H, W) bool: pixels within chessboard distance ``width`` of a GT label edge."""
    if width < 0:
        raise ValueError(f"trimap width must be >= 0, found {width}")
    edges = label_edges(target, ignore_index).unsqueeze(1).float()
    band = F.max_pool2d(edges, 2 * width + 1, stride=1, padding=width) if width else edges
    return band.squeeze(1) > 0


def trimap_confusion(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    widths: Sequence[int],
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """(len(widths), C, C) confusion matrices restricted to each trimap band."""
    _check_labels(pred, target)
    out = []
    for w in widths:
        band = trimap_band(target, int(w), ignore_index)
        masked = torch.where(band, target.long(), torch.full_like(target.long(), ignore_index))
        out.append(confusion_matrix(pred, masked, num_classes, ignore_index))
    return torch.stack(out)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(den, float("nan")))


def boundary_iou_from_stats(inter: Tensor, union: Tensor) -> tuple[Tensor, Tensor]:
    """(mean over defined classes, per-class (C,) with NaN where the union is empty)."""
    per_class = _ratio(inter, union)
    return per_class.nanmean(), per_class


def bf_from_stats(stats: Tensor) -> tuple[Tensor, Tensor]:
    """(mean BF over classes with any boundary, per-class BF (C,))."""
    precision = _ratio(stats[0], stats[1])
    recall = _ratio(stats[2], stats[3])
    p0, r0 = precision.nan_to_num(0.0), recall.nan_to_num(0.0)
    f = torch.where(p0 + r0 > 0, 2 * p0 * r0 / (p0 + r0).clamp_min(1e-300), torch.zeros_like(p0))
    defined = (stats[1] + stats[3]) > 0
    f = torch.where(defined, f, torch.full_like(f, float("nan")))
    return f.nanmean(), f


class BoundaryIoU(Metric):
    """Dataset-level semantic Boundary IoU (module doc); ``compute`` -> {mean, per_class}."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self, num_classes: int, dilation_ratio: float = 0.02, ignore_index: int = IGNORE_INDEX, **kw
    ) -> None:
        super().__init__(**kw)
        boundary_width(1, 1, dilation_ratio)  # validates the ratio
        self.num_classes, self.dilation_ratio, self.ignore_index = (
            num_classes,
            dilation_ratio,
            ignore_index,
        )
        self.add_state(
            "intersection", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("union", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        i, u = boundary_iou_stats(
            pred, target, self.num_classes, self.dilation_ratio, self.ignore_index
        )
        self.intersection += i
        self.union += u

    def compute(self) -> dict[str, Tensor]:
        mean, per_class = boundary_iou_from_stats(self.intersection, self.union)
        return {"mean": mean, "per_class": per_class}


class BFScore(Metric):
    """Dataset-level boundary F1 with a pixel ``tolerance``; ``compute`` -> {mean, per_class}."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self, num_classes: int, tolerance: float = 2.0, ignore_index: int = IGNORE_INDEX, **kw
    ) -> None:
        super().__init__(**kw)
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, found {tolerance}")
        self.num_classes, self.tolerance, self.ignore_index = num_classes, tolerance, ignore_index
        self.add_state("stats", torch.zeros(4, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.stats += bf_stats(pred, target, self.num_classes, self.tolerance, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        mean, per_class = bf_from_stats(self.stats)
        return {"mean": mean, "per_class": per_class}


class TrimapIoU(Metric):
    """mIoU inside trimap bands of several widths. ``compute`` -> {width: mIoU}."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (1, 2, 4, 8, 16),
        ignore_index: int = IGNORE_INDEX,
        **kw,
    ) -> None:
        super().__init__(**kw)
        if not widths or any(int(w) < 0 for w in widths):
            raise ValueError(
                f"widths must be a non-empty list of non-negative ints, found {widths}"
            )
        self.num_classes, self.widths, self.ignore_index = (
            num_classes,
            [int(w) for w in widths],
            ignore_index,
        )
        self.add_state(
            "confmat",
            torch.zeros(len(self.widths), num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.confmat += trimap_confusion(
            pred, target, self.num_classes, self.widths, self.ignore_index
        )

    def compute(self) -> dict[int, Tensor]:
        return {
            w: per_class_iou(cm).nanmean() for w, cm in zip(self.widths, self.confmat, strict=True)
        }
