"""Panels and plots: files exist, have the expected layout, and follow the aux contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from cheeger.metrics.results import StageResult
from cheeger.models.heads import SegmentationHead, upsample_logits
from cheeger.module import SegmentationModule
from cheeger.run.callbacks import PredictionPanel, SummaryPlots, peak_memory_mb


class FakeSpectralHead(SegmentationHead):
    """A conv head that also returns the spectral auxiliaries a spectral head provides."""

    def __init__(self, in_channels: int, num_classes: int, k: int = 4) -> None:
        super().__init__(in_channels, num_classes)
        self.k = k
        self.classifier = torch.nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features, image):
        b, _, h, w = features.shape
        vectors = features[:, : self.k]
        eigenvalues = torch.linspace(0, 1, self.k).expand(b, self.k)
        aux = {"eigenvectors": vectors, "eigenvalues": eigenvalues, "response": 1 - eigenvalues}
        return upsample_logits(self.classifier(features), image.shape[-2:]), aux


def test_panel_with_spectral_aux_and_summary_plots(compose_train, tmp_path):
    cfg = compose_train()
    datamodule = instantiate(cfg.dataset)
    module = SegmentationModule.from_config(cfg)
    module.head = FakeSpectralHead(module.backbone.out_channels, 19)
    panel = PredictionPanel(str(tmp_path / "panels"), num_images=2, num_eigenvectors=3)
    path, rows = panel.render(module, datamodule, tmp_path / "panels" / "epoch_000.png")
    assert list(rows[0])[:7] == [
        "input",
        "ground truth",
        "prediction",
        "errors",
        "eigenvector 1",
        "eigenvector 2",
        "eigenvector 3",
    ]
    width, height = Image.open(path).size
    assert width > 2 * height  # 7 columns, 2 rows
    assert (tmp_path / "panels" / "response_epoch_000.png").is_file()
    # The heat maps are diverging: negative entries blue, positive red.
    vec = rows[0]["eigenvector 1"].astype(int)
    assert vec.shape == (32, 64, 3)

    module.results["val"] = StageResult(
        iou=torch.tensor([0.5] * 19),
        miou=torch.tensor(0.5),
        pixel_acc=torch.tensor(0.9),
        confmat=torch.eye(19, dtype=torch.long) * 10,
    )

    class _Trainer:
        is_global_zero = True
        loggers: list = []

    plots = SummaryPlots(str(tmp_path / "plots"))
    plots.on_fit_end(_Trainer(), module)
    assert sorted(p.name for p in plots.paths) == ["val_class_scores.png", "val_confusion.png"]
    confusion = np.asarray(Image.open(plots.paths[1]))
    assert confusion.shape[0] > 300 and confusion.shape[1] > 300  # legible, not a thumbnail


def test_panel_rejects_bad_eigenvector_shape(compose_train, tmp_path):
    panel = PredictionPanel(str(tmp_path))
    with pytest.raises(ValueError, match=r"'eigenvectors' must be \(B, k, h, w\)"):
        panel._eigenvector_columns({"eigenvectors": torch.zeros(1, 10, 3)}, (4, 4))
    with pytest.raises(ValueError, match="every_n_epochs"):
        PredictionPanel(str(tmp_path), every_n_epochs=0)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_cpu_peak_memory_is_the_process_high_water_mark():
    def high_water_mb() -> float:  # the kernel's own figure, read independently
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    before = high_water_mb()
    measured = peak_memory_mb(torch.device("cpu"))
    assert before - 1 <= measured <= high_water_mb() + 1
