"""Boundary-aware segmentation metrics: Boundary IoU, BF score and trimap IoU.

All three are computed in torch on batches of label maps (B, H, W) (any
device, no per-image Python loop) and accumulated as per-class sums over the
whole dataset, so the stateful ``Metric`` shells sync across processes by
summation; their ``compute`` takes the float64 ratios of CPU copies of the sums
(MPS has no float64). Pixels whose ground truth is ``ignore_index`` are excluded
on both sides.

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
from cheeger.ops.checks import check_int, check_number


def _check_labels(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred and target must both be (B, H, W) label maps; "
            f"found {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def boundary_width(height: int, width: int, dilation_ratio: float) -> int:
    """Band width d = max(1, round(dilation_ratio * image diagonal))."""
    check_number("dilation_ratio (metrics.dilation_ratio)", dilation_ratio, 0, low_open=True)
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def _window_max(x: Tensor, d: int, pad_value: float) -> Tensor:
    """Max over the (2d+1)^2 window of (B, H, W) ``x``, outside the image = ``pad_value``.

    Separable (a row pass then a column pass): O(d) per pixel, not O(d^2).
    """
    if d == 0:
        return x
    y = F.pad(x.unsqueeze(1), (d, d, d, d), value=pad_value)
    y = F.max_pool2d(y, kernel_size=(1, 2 * d + 1), stride=1)
    y = F.max_pool2d(y, kernel_size=(2 * d + 1, 1), stride=1)
    return y.squeeze(1)


def erode(masks: Tensor, d: int) -> Tensor:
    """Binary erosion of (B, H, W) bool masks by a (2d+1)^2 square, zero outside the image.

    Equal to d erosions by a 3x3 square on the zero-padded mask.
    """
    return ~(_window_max((~masks).float(), d, 1.0) > 0)


def inner_band(masks: Tensor, d: int) -> Tensor:
    """``M - erode(M, d)`` for (B, H, W) bool masks."""
    return masks & ~erode(masks, d)


def label_band(labels: Tensor, d: int) -> Tensor:
    """(B, H, W) bool: pixels in the inner band of width d of their own label's mask.

    A pixel of label c lies in ``inner_band(labels == c, d)`` exactly when its
    (2d+1)^2 window is not uniformly c (a different label, or outside the
    image). Checked with one window max and one window min, whatever the
    number of classes.
    """
    x = labels.float()
    outside = -1.0  # never a label: class ids are >= 0 and the ignore id is 255
    hi = _window_max(x, d, outside)
    lo = -_window_max(-x, d, -outside)
    return hi != lo


def _class_counts(labels: Tensor, where: Tensor, num_classes: int) -> Tensor:
    """(C,) int64 counts of ``labels[where]`` per class id (ids outside [0, C) dropped)."""
    values = labels[where].long()
    values = values[(values >= 0) & (values < num_classes)]
    return torch.bincount(values, minlength=num_classes)


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
    valid = target != ignore_index
    g = label_band(target, d) & valid  # pixel is in the band of class target[pixel]
    p = label_band(pred, d) & valid  # ... of class pred[pixel]
    g_count = _class_counts(target, g, num_classes)
    p_count = _class_counts(pred, p, num_classes)
    inter = _class_counts(target, g & p & (pred == target), num_classes)
    return inter, g_count + p_count - inter


def _disk_offsets(radius: float) -> list[tuple[int, int]]:
    r = int(math.floor(radius))
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if dy * dy + dx * dx <= radius * radius
    ]


def _near_same_label(query: Tensor, reference: Tensor, radius: float) -> Tensor:
    """(B, H, W) bool: query[x] >= 0 and some reference[y] == query[x] with |x - y| <= radius.

    Both maps hold a class id at marked pixels and -1 elsewhere.
    """
    r = int(math.floor(radius))
    h, w = query.shape[-2:]
    padded = F.pad(reference, (r, r, r, r), value=-1)
    hit = torch.zeros_like(query, dtype=torch.bool)
    for dy, dx in _disk_offsets(radius):
        hit |= padded[:, r + dy : r + dy + h, r + dx : r + dx + w] == query
    return hit & (query >= 0)


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
    check_number("tolerance", tolerance, 0)
    valid = target != ignore_index
    g = label_band(target, 1) & valid
    p = label_band(pred, 1) & valid
    g_lab = torch.where(g, target.long(), torch.full_like(target.long(), -1))
    p_lab = torch.where(p, pred.long(), torch.full_like(pred.long(), -1))
    p_hits = _near_same_label(p_lab, g_lab, tolerance)
    g_hits = _near_same_label(g_lab, p_lab, tolerance)
    return torch.stack(
        [
            _class_counts(pred, p_hits, num_classes),
            _class_counts(pred, p, num_classes),
            _class_counts(target, g_hits, num_classes),
            _class_counts(target, g, num_classes),
        ]
    )


def label_edges(target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(B, H, W) -> bool: valid pixels with a different valid label in their 3x3 neighbourhood."""
    t = target.float()
    valid = target != ignore_index
    # Ignored pixels and the outside of the image must not count as "different".
    hi = _window_max(torch.where(valid, t, torch.full_like(t, -1.0)), 1, -1.0)
    big = float(ignore_index) + 1.0
    lo = -_window_max(-torch.where(valid, t, torch.full_like(t, big)), 1, -big)
    return ((hi > t) | (lo < t)) & valid


def trimap_band(
    target: Tensor,
    width: int,
    ignore_index: int = IGNORE_INDEX,
    edges: Tensor | None = None,
) -> Tensor:
    """(B, H, W) bool: pixels within chessboard distance ``width`` of a GT label edge.

    ``edges``: ``label_edges(target, ignore_index)`` when the caller has it already
    (several widths of one target).
    """
    width = check_int("trimap width", width, 0)
    if edges is None:
        edges = label_edges(target, ignore_index)
    return _window_max(edges.float(), width, 0.0) > 0


def trimap_confusion(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    widths: Sequence[int],
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """(len(widths), C, C) confusion matrices restricted to each trimap band."""
    _check_labels(pred, target)
    edges = label_edges(target, ignore_index)
    out = []
    for w in widths:
        band = trimap_band(target, w, ignore_index, edges)
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
    """Dataset-level semantic Boundary IoU (module doc).

    ``compute`` -> {``boundary_iou``: mean, ``boundary_iou_per_class``: (C,)}.
    """

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
        mean, per_class = boundary_iou_from_stats(self.intersection.cpu(), self.union.cpu())
        return {"boundary_iou": mean, "boundary_iou_per_class": per_class}


class BFScore(Metric):
    """Dataset-level boundary F1 with a pixel ``tolerance``.

    ``compute`` -> {``bf``: mean, ``bf_per_class``: (C,)}.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self, num_classes: int, tolerance: float = 2.0, ignore_index: int = IGNORE_INDEX, **kw
    ) -> None:
        super().__init__(**kw)
        check_number("tolerance (metrics.bf_tolerance)", tolerance, 0)
        self.num_classes, self.tolerance, self.ignore_index = num_classes, tolerance, ignore_index
        self.add_state("stats", torch.zeros(4, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.stats += bf_stats(pred, target, self.num_classes, self.tolerance, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        mean, per_class = bf_from_stats(self.stats.cpu())
        return {"bf": mean, "bf_per_class": per_class}


class TrimapIoU(Metric):
    """mIoU inside trimap bands of several widths.

    ``compute`` -> {``trimap``: (len(widths),) float64, the mIoU per width in order}.
    """

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

    def compute(self) -> dict[str, Tensor]:
        return {"trimap": torch.stack([per_class_iou(cm).nanmean() for cm in self.confmat.cpu()])}
