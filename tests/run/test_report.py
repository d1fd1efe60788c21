"""The results table: values per class, means, and means that left classes out."""

from __future__ import annotations

import math

import torch

from cheeger.metrics.results import StageResult
from cheeger.run.report import results_table

NAN = math.nan


def result(iou, **extra):
    iou = torch.tensor(iou, dtype=torch.float64)
    confmat = torch.zeros(len(iou), len(iou), dtype=torch.long)
    return StageResult(iou, iou.nanmean(), torch.tensor(0.9), confmat, **extra)


def test_every_class_present_has_no_mark():
    text = results_table(["road", "car"], result([0.5, 0.25]), "val")
    lines = text.splitlines()
    assert lines[0] == "val"
    assert lines[3].split() == ["road", "0.5000"] and lines[4].split() == ["car", "0.2500"]
    assert [line for line in lines if line.startswith("mIoU")][0].split() == ["mIoU", "0.3750"]
    assert "*" not in text


def test_mean_over_fewer_classes_is_marked_and_the_absent_named():
    # A 0/255 binary dataset: only background occurs, its IoU is 1, the mean reads 1.0.
    per_class = {
        "boundary_iou_per_class": torch.tensor([0.8, NAN], dtype=torch.float64),
        "boundary_iou": torch.tensor(0.8),
    }
    text = results_table(["background", "foreground"], result([1.0, NAN], **per_class), "test")
    lines = text.splitlines()
    assert lines[4].split() == ["foreground", "-", "-"]
    miou = next(line for line in lines if line.startswith("mIoU"))
    assert miou.split()[:2] == ["mIoU", "1.0000"] and "over 1 of 2 classes*" in miou
    biou = next(line for line in lines if line.startswith("boundary_iou"))
    assert "over 1 of 2 classes*" in biou
    assert "over" not in next(line for line in lines if line.startswith("pixel acc"))
    assert lines[-1] == "* left out: absent from ground truth and prediction (foreground)"
