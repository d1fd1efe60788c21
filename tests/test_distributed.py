"""trainer=ddp: two CPU processes (gloo) report the metrics of one process on the same data.

The val split has 5 images, so the ranks hold 3 and 2: a sampler that pads the
split (torch's DistributedSampler repeats an image), metrics averaged per rank, or
a loss mean weighted by a truncated image count (Lightning's own epoch mean divides
the summed image count by the world size in integer arithmetic) each change at
least one logged value. Batches of one image make the loss comparable exactly (a
batch loss is a mean over the batch's pixels, so batching images differently
moves it slightly); the metrics are sums over pixels and exact under any batching.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cheeger.eval import evaluate
from tests.conftest import ROOT, compose

EVAL = [
    "dataset.source.height=32",
    "dataset.source.width=64",
    "dataset.source.lengths={train: 4, val: 5, test: 5}",
    "dataset.eval_batch_size=1",
    "dataset.num_workers=0",
    "trainer.enable_progress_bar=false",
    "callbacks.export=null",
    "logger=csv",
]
COMPARED = [
    "val/mIoU",
    "val/pixel_acc",
    "val/boundary_iou",
    "val/bf",
    "val/trimap_iou@1",
    "val/trimap_iou@16",
    "val/loss",
]


def logged_metrics(run_dir: Path) -> dict[str, float]:
    """The single row of a validation run's metrics.csv (CSVLogger, rank 0 only)."""
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 1, rows
    return {key: float(value) for key, value in rows[0].items() if value != ""}


def test_two_process_validation_equals_one_process(tiny_checkpoint, tmp_path, device):
    """On cpu two gloo processes; on cuda one process per GPU, at most two (nccl)."""
    if device == "mps":
        pytest.skip("DDP needs cpu (gloo) or cuda (nccl); MPS has no process group backend")
    processes = 2 if device == "cpu" else min(2, torch.cuda.device_count())
    ddp_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "cheeger.eval",
        f"ckpt_path={tiny_checkpoint}",
        *EVAL,
        "trainer=ddp",
        f"trainer.accelerator={device}",
        f"trainer.devices={processes}",
        f"hydra.run.dir={ddp_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    if processes == 2:
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # two processes really ran
    assert "replicates some samples" not in output  # Lightning's padding sampler unused
    ddp = logged_metrics(ddp_dir)

    cfg = compose("eval", [f"ckpt_path={tiny_checkpoint}", *EVAL, "trainer=cpu"], tmp_path / "one")
    one = evaluate(cfg)

    assert one["val/mIoU"] > 0 and one["val/boundary_iou"] > 0  # values worth comparing
    for key in COMPARED:
        assert ddp[key] == pytest.approx(one[key], rel=1e-6, abs=1e-7), key
    per_class = {k for k in one if k.startswith("val/iou/")}
    assert per_class and per_class == {k for k in ddp if k.startswith("val/iou/")}
    for key in per_class:
        assert ddp[key] == pytest.approx(one[key], rel=1e-6, abs=1e-7), key
