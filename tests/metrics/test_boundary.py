"""Boundary metrics against independent scipy.ndimage implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cheeger.metrics.boundary import (
    BFScore,
    BoundaryIoU,
    TrimapIoU,
    boundary_width,
    inner_band,
    trimap_band,
)

IGNORE = 255


def blobs(rng, shape, num_classes, ignore_frac=0.05):
    """Random piecewise-constant label maps (smoothed noise, argmax), with ignore pixels."""
    h, w = shape
    noise = ndimage.gaussian_filter(rng.normal(size=(num_classes, h, w)), sigma=(0, 2, 2))
    labels = noise.argmax(0).astype(np.int64)
    labels[rng.random(shape) < ignore_frac] = IGNORE
    return labels


def oracle_band(mask, d):
    padded = np.pad(mask, 1, constant_values=False)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
    return mask & ~eroded


def oracle_boundary_iou(preds, targets, c_count, ratio=0.02):
    inter, union = np.zeros(c_count), np.zeros(c_count)
    for p, t in zip(preds, targets, strict=True):
        d = max(1, int(round(ratio * math.sqrt(t.shape[0] ** 2 + t.shape[1] ** 2))))
        valid = t != IGNORE
        for c in range(c_count):
            g = oracle_band(t == c, d) & valid
            q = oracle_band(p == c, d) & valid
            inter[c] += (g & q).sum()
            union[c] += (g | q).sum()
    per = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return np.nanmean(per), per


def oracle_bf(preds, targets, c_count, tol):
    s = np.zeros((4, c_count))
    for p, t in zip(preds, targets, strict=True):
        valid = t != IGNORE
        for c in range(c_count):
            g = oracle_band(t == c, 1) & valid
            q = oracle_band(p == c, 1) & valid
            dist_g = ndimage.distance_transform_edt(~g) if g.any() else np.full(g.shape, np.inf)
            dist_q = ndimage.distance_transform_edt(~q) if q.any() else np.full(q.shape, np.inf)
            s[:, c] += [(q & (dist_g <= tol)).sum(), q.sum(), (g & (dist_q <= tol)).sum(), g.sum()]
    f = []
    for c in range(c_count):
        if s[1, c] + s[3, c] == 0:
            f.append(np.nan)
            continue
        prec = s[0, c] / s[1, c] if s[1, c] else 0.0
        rec = s[2, c] / s[3, c] if s[3, c] else 0.0
        f.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return np.nanmean(f), np.array(f)


def oracle_trimap(preds, targets, c_count, width):
    inter, union = np.zeros(c_count), np.zeros(c_count)
    for p, t in zip(preds, targets, strict=True):
        h, w = t.shape
        edge = np.zeros(t.shape, bool)
        for y in range(h):
            for x in range(w):
                if t[y, x] == IGNORE:
                    continue
                win = t[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
                edge[y, x] = np.any((win != IGNORE) & (win != t[y, x]))
        band = ndimage.binary_dilation(edge, np.ones((2 * width + 1,) * 2)) if width else edge
        valid = band & (t != IGNORE)
        for c in range(c_count):
            inter[c] += ((p == c) & (t == c) & valid).sum()
            union[c] += (((p == c) | (t == c)) & valid).sum()
    per = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return np.nanmean(per)


def batches(seed, shape=(23, 31), n=3, c_count=4):
    rng = np.random.default_rng(seed)
    targets = [blobs(rng, shape, c_count) for _ in range(n)]
    preds = []
    for t in targets:
        p = np.where(rng.random(shape) < 0.85, t, rng.integers(0, c_count, shape))
        p = np.where(p == IGNORE, rng.integers(0, c_count, shape), p)
        preds.append(np.roll(p, rng.integers(-2, 3), axis=1))  # shifted boundaries
    return preds, targets


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.02, 0.08])
def test_boundary_iou_matches_scipy(seed, ratio, device):
    preds, targets = batches(seed)
    metric = BoundaryIoU(4, dilation_ratio=ratio).to(device)

    def on(array):
        return torch.from_numpy(array).to(device)

    metric.update(on(np.stack(preds[:2])), on(np.stack(targets[:2])))
    metric.update(on(preds[2][None]), on(targets[2][None]))
    assert metric.intersection.device.type == device
    mean, per = oracle_boundary_iou(preds, targets, 4, ratio)
    out = {key: value.cpu() for key, value in metric.compute().items()}
    assert out["boundary_iou"].item() == pytest.approx(mean, abs=1e-12)
    np.testing.assert_allclose(out["boundary_iou_per_class"].numpy(), per, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tol", [0, 1, 2, 3.5])
def test_bf_score_matches_scipy(seed, tol):
    preds, targets = batches(seed + 10)
    metric = BFScore(4, tolerance=tol)
    metric.update(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(targets)))
    mean, per = oracle_bf(preds, targets, 4, tol)
    out = metric.compute()
    assert out["bf"].item() == pytest.approx(mean, abs=1e-12)
    np.testing.assert_allclose(out["bf_per_class"].numpy(), per, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_trimap_matches_loops(seed):
    preds, targets = batches(seed + 20, shape=(17, 21))
    metric = TrimapIoU(4, widths=(0, 1, 3))
    metric.update(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(targets)))
    out = metric.compute()["trimap"]
    for i, w in enumerate((0, 1, 3)):
        assert out[i].item() == pytest.approx(oracle_trimap(preds, targets, 4, w), abs=1e-12)


def test_hand_computed_boundary_iou():
    # GT: class 1 in columns 0-1, class 0 in 2-3. Prediction: class 1 in columns 0-2.
    t = torch.tensor([[1, 1, 0, 0]] * 4)[None]
    p = torch.tensor([[1, 1, 1, 0]] * 4)[None]
    out = BoundaryIoU(2)  # 4x4: d = 1
    out.update(p, t)
    # class 1: GT band = all 8 px; pred band = 12 - 2 interior px = 10; inter 6, union 12.
    # class 0: GT band 8 px, pred band 4 px inside it: 4 / 8.
    np.testing.assert_allclose(out.compute()["boundary_iou_per_class"].numpy(), [0.5, 0.5])


def test_border_touching_objects_have_boundary_there():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, :, :4] = True  # a strip along the left image border
    band = inner_band(mask, 1)[0]
    assert band[:, 0].all()  # the image border is boundary (zero padding)
    assert band[0, :4].all() and band[8, :4].all() and band[:, 3].all()
    assert not band[1:8, 1:3].any() and band.sum().item() == 36 - 14


def test_identity_and_all_wrong():
    rng = np.random.default_rng(3)
    t = torch.from_numpy(np.stack([blobs(rng, (23, 31), 4, ignore_frac=0.0) for _ in range(2)]))
    p_right = t.clone()
    for metric in (BoundaryIoU(4), BFScore(4)):
        metric.update(p_right, t)
        assert all(v.nan_to_num(1.0).min().item() == 1.0 for v in metric.compute().values())
    trimap = TrimapIoU(4)
    trimap.update(p_right, t)
    assert (trimap.compute()["trimap"] == 1.0).all()
    wrong = (p_right + 1) % 4
    for metric in (BoundaryIoU(4), BFScore(4, tolerance=0)):
        metric.update(wrong, t)
        assert all(v.nan_to_num(0.0).max().item() == 0.0 for v in metric.compute().values())


def test_ignored_pixels_never_count_and_absent_classes_are_nan():
    t = torch.full((1, 8, 8), IGNORE)
    t[0, :4] = 0
    p = torch.zeros(1, 8, 8, dtype=torch.long)
    p[0, 4:] = 2  # prediction of class 2 only where GT is ignored
    m = BoundaryIoU(3)
    m.update(p, t)
    per = m.compute()["boundary_iou_per_class"]
    assert per[0].item() == 1.0 and math.isnan(per[1].item()) and math.isnan(per[2].item())


def test_band_width_and_validation():
    assert boundary_width(1024, 2048, 0.02) == round(0.02 * math.hypot(1024, 2048))
    assert boundary_width(8, 8, 0.02) == 1
    with pytest.raises(ValueError, match="dilation_ratio"):
        BoundaryIoU(3, dilation_ratio=0)
    with pytest.raises(ValueError, match="tolerance"):
        BFScore(3, tolerance=-1)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        BoundaryIoU(3).update(
            torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long)
        )
    assert trimap_band(torch.zeros(1, 5, 5, dtype=torch.long), 2).sum() == 0
