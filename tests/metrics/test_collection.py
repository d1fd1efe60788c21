"""StageMetrics: one MetricCollection per stage, computed into one StageResult."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cheeger.metrics.boundary import BFScore, BoundaryIoU, TrimapIoU
from cheeger.metrics.collection import StageMetrics
from cheeger.metrics.edges import EdgeAUC
from cheeger.metrics.iou import SegmentationIoU
from cheeger.ops.grid import grid_graph


def label_batches(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        target = torch.from_numpy(rng.integers(0, 3, size=(2, 12, 16)))
        target[:, :, :3] = 255
        noise = torch.from_numpy(rng.random((2, 12, 16)) < 0.3)
        pred = torch.where(noise, torch.from_numpy(rng.integers(0, 3, size=(2, 12, 16))), target)
        yield pred.clamp_max(2), target


def test_result_equals_each_metric_computed_alone():
    stage = StageMetrics(3, trimap_widths=(1, 3), dilation_ratio=0.05, bf_tolerance=1.0)
    alone = [SegmentationIoU(3), BoundaryIoU(3, 0.05), BFScore(3, 1.0), TrimapIoU(3, (1, 3))]
    graph_metric = EdgeAUC()
    for pred, target in label_batches(0):
        image = target.unsqueeze(1).float().clamp_max(3.0)
        aux = {"graph": grid_graph(image, 1, 0.5), "graph_size": (12, 16)}
        stage.update(pred, target, aux)
        for metric in alone:
            metric.update(pred, target)
        graph_metric.update(aux["graph"], target, (12, 16))
    result = stage.compute()
    expected = {}
    for metric in [*alone, graph_metric]:
        expected.update(metric.compute())
    for name in ("miou", "pixel_acc", "boundary_iou", "bf", "edge_auc"):
        assert getattr(result, name).item() == pytest.approx(expected[name].item()), name
    for name in ("iou", "confmat", "boundary_iou_per_class", "bf_per_class"):
        torch.testing.assert_close(getattr(result, name), expected[name], equal_nan=True)
    assert list(result.trimap) == [1, 3]
    assert [v.item() for v in result.trimap.values()] == expected["trimap"].tolist()
    assert 0.5 < result.edge_auc.item() <= 1.0  # the graph is the labels' own image


def test_training_measures_regions_only_and_no_graph_leaves_edge_auc_none():
    train = StageMetrics(3, boundaries=False)
    val = StageMetrics(3)
    assert not train.update_called
    for pred, target in label_batches(1):
        train.update(pred, target, None)
        val.update(pred, target, {"eigenvalues": torch.zeros(2, 4)})  # aux without a graph
    result = train.compute()
    assert result.boundary_iou is None and result.bf is None and result.trimap == {}
    assert result.edge_auc is None and 0.0 < result.miou.item() < 1.0
    checked = val.compute()
    assert checked.edge_auc is None and checked.boundary_iou is not None
    assert checked.miou.item() == result.miou.item()


def test_reset_starts_a_new_epoch():
    stage = StageMetrics(3)
    batches = list(label_batches(2))
    for pred, target in batches:
        stage.update(pred, target)
    stage.reset()
    assert not stage.update_called
    pred, target = batches[0]
    stage.update(pred, target)
    fresh = StageMetrics(3)
    fresh.update(pred, target)
    assert stage.compute().miou.item() == fresh.compute().miou.item()
    assert not math.isnan(stage.compute().boundary_iou.item())
