"""Lightning callbacks: prediction panels written during validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from cheeger.data.classes import colorize
from cheeger.report import error_map, save_panel


class PredictionPanel(L.Callback):
    """Every ``every_n_epochs`` validation epochs, save a PNG panel of fixed val images.

    Columns: input | ground truth | prediction | errors (wrong pixels red). The
    same ``num_images`` images (evenly spaced over the val split) are shown
    every time so panels can be compared across epochs. Files go to
    ``out_dir/epoch_XXX.png``; if a logger can ``log_image`` (W&B), the panel is
    logged there too.
    """

    def __init__(self, out_dir: str, every_n_epochs: int = 1, num_images: int = 4) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.panel.every_n_epochs must be >= 1, found {every_n_epochs}")
        if num_images < 1:
            raise ValueError(f"callbacks.panel.num_images must be >= 1, found {num_images}")
        self.out_dir = Path(out_dir)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.paths: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.fast_dev_run:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "dataset"):
            warnings.warn(
                "PredictionPanel needs a SegmentationDataModule; no panel written", stacklevel=1
            )
            return
        path = self.render(
            pl_module, datamodule, self.out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        )
        self.paths.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/panel", images=[str(path)], step=trainer.global_step)

    @torch.no_grad()
    def render(self, pl_module: L.LightningModule, datamodule, path: Path) -> Path:
        dataset = datamodule.dataset("val")
        count = min(self.num_images, len(dataset))
        indices = np.linspace(0, len(dataset) - 1, count).round().astype(int)
        mean = np.asarray(dataset.mean, dtype=np.float32)
        std = np.asarray(dataset.std, dtype=np.float32)
        was_training = pl_module.training
        pl_module.eval()
        rows = []
        try:
            for i in indices:
                sample = dataset[int(i)]
                image = sample["image"].unsqueeze(0).to(pl_module.device)
                logits, _ = pl_module(image)
                pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
                target = sample["mask"].numpy().astype(np.uint8)
                rgb = sample["image"].numpy().transpose(1, 2, 0) * std + mean
                rows.append(
                    {
                        "input": (rgb.clip(0, 1) * 255).astype(np.uint8),
                        "ground truth": colorize(target),
                        "prediction": colorize(pred),
                        "errors": error_map(pred, target, dataset.ignore_index),
                    }
                )
        finally:
            pl_module.train(was_training)
        return save_panel(rows, path, title=path.stem.replace("_", " "))
