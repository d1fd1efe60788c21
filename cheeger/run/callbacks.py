"""Lightning callbacks: prediction panels during validation, summary plots at the end,
the time and peak memory of training, and prediction files in a dataset's own format."""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from cheeger.data.classes import CITYSCAPES_CLASSES, class_palette
from cheeger.data.datamodule import SegmentationDataModule
from cheeger.data.skipping import SkippedSample
from cheeger.module import SegmentationModule
from cheeger.run import keys
from cheeger.run.report import (
    error_map,
    heat_map,
    plot_class_scores,
    plot_confusion,
    plot_response,
    save_panel,
)

log = logging.getLogger("cheeger")


def wandb_loggers(trainer: L.Trainer) -> list:
    """The trainer's W&B loggers (matched by name so wandb is imported only when used)."""
    return [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]


class StepTimer(L.Callback):
    """Logs ``train/step_time``: the median wall time (s) of the epoch's training batches.

    A batch's time covers its forward pass, loss, backward pass and optimizer step (from
    ``on_train_batch_start`` to ``on_train_batch_end``), not data loading. The median
    keeps the first, slower steps (allocator, caches) from dominating. Device work is
    synchronised at the end of each batch so that GPU times are real.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type != "cpu":  # asynchronous devices: wait for the kernels
            torch.accelerator.synchronize(pl_module.device)
        self.times.append(time.perf_counter() - self._start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.times:
            pl_module.log(keys.STEP_TIME, statistics.median(self.times))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: allocated tensors on CUDA, resident set of the process
    (ru_maxrss: everything, Python and data included) elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB


class PeakMemory(L.Callback):
    """Logs ``train/peak_memory_mb`` at the end of each training epoch: the peak since the
    process (CPU) or the run (CUDA, statistics reset at the start of fit) began.

    On CPU the figure is monotone over the life of the process, so compare runs made
    in separate processes (``python -m cheeger.train``, as experiments/head_study.py does).
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log(keys.PEAK_MEMORY, peak_memory_mb(pl_module.device))


class PredictionPanel(L.Callback):
    """Every ``every_n_epochs`` validation epochs, save a PNG panel of fixed val images.

    Columns: input | ground truth | prediction | errors (wrong pixels red). The
    same ``num_images`` images (evenly spaced over the val split) are shown
    every time so panels can be compared across epochs. Files go to
    ``out_dir/epoch_XXX.png``.

    Spectral heads: when the head's auxiliaries hold ``eigenvectors``
    (B, k, h, w), the first ``num_eigenvectors`` are added as heat-map columns
    (blue negative, red positive, scaled per map); when they also hold
    ``eigenvalues`` and ``response`` (B, k), the spectral response h(λ) of the
    shown images is plotted to ``out_dir/response_epoch_XXX.png``.

    With a W&B logger the panel is logged as ``val/panel``, each image as
    ``val/overlay`` with W&B's interactive prediction / ground-truth mask layers, and the
    response plot as ``val/response`` (``cheeger.run.keys``).
    """

    def __init__(
        self,
        out_dir: str,
        every_n_epochs: int = 1,
        num_images: int = 4,
        num_eigenvectors: int = 3,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.panel.every_n_epochs must be >= 1, found {every_n_epochs}")
        if num_images < 1:
            raise ValueError(f"callbacks.panel.num_images must be >= 1, found {num_images}")
        self.out_dir = Path(out_dir)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.num_eigenvectors = num_eigenvectors
        self.paths: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.fast_dev_run:
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, SegmentationDataModule):
            warnings.warn(
                "PredictionPanel needs a SegmentationDataModule; no panel written", stacklevel=1
            )
            return
        path, rows = self.render(
            pl_module, datamodule, self.out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        )
        if path is None:
            return
        self.paths.append(path)
        response = _response_path(path)
        for logger in wandb_loggers(trainer):
            self._log_wandb(logger, path, rows, pl_module.class_names, response)

    @staticmethod
    def _log_wandb(logger, path: Path, rows: list[dict], class_names, response: Path) -> None:
        import wandb

        labels = dict(enumerate(class_names))
        overlays = [
            wandb.Image(
                row["input"],
                masks={
                    "prediction": {"mask_data": row["pred_ids"], "class_labels": labels},
                    "ground_truth": {"mask_data": row["target_ids"], "class_labels": labels},
                },
            )
            for row in rows
        ]
        media = {keys.PANEL: wandb.Image(str(path)), keys.OVERLAY: overlays}
        if response.is_file():
            media[keys.RESPONSE] = wandb.Image(str(response))
        logger.experiment.log(media)

    @torch.no_grad()
    def render(
        self, pl_module: L.LightningModule, datamodule, path: Path
    ) -> tuple[Path | None, list[dict]]:
        """Write the panel; returns its path and the rows (with raw label ids).

        Images skipped as bad (``dataset.skip_bad``) are left out; when all are, no
        panel is written and the path is None.
        """
        dataset = datamodule.dataset("val")
        count = min(self.num_images, len(dataset))
        indices = np.linspace(0, len(dataset) - 1, count).round().astype(int)
        colors = class_palette(pl_module.num_classes, datamodule.palette)
        mean = np.asarray(dataset.mean, dtype=np.float32)
        std = np.asarray(dataset.std, dtype=np.float32)
        was_training = pl_module.training
        pl_module.eval()
        rows, shown, spectra = [], [], []
        try:
            for i in indices:
                sample = dataset[int(i)]
                if isinstance(sample, SkippedSample):
                    continue
                image = sample["image"].unsqueeze(0).to(pl_module.device)
                logits, aux = pl_module(image)
                pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
                target = sample["mask"].numpy().astype(np.uint8)
                rgb = sample["image"].numpy().transpose(1, 2, 0) * std + mean
                row = {
                    "input": (rgb.clip(0, 1) * 255).astype(np.uint8),
                    "ground truth": colors[target],
                    "prediction": colors[pred],
                    "errors": error_map(pred, target, dataset.ignore_index),
                }
                row.update(self._eigenvector_columns(aux, target.shape))
                if "eigenvalues" in aux and "response" in aux:
                    spectra.append(
                        (
                            int(i),
                            (aux["eigenvalues"][0].float().cpu(), aux["response"][0].float().cpu()),
                        )
                    )
                shown.append(row)
                rows.append({**row, "pred_ids": pred, "target_ids": target})
        finally:
            pl_module.train(was_training)
        if not shown:
            return None, rows
        if spectra:
            curves = {f"val image {i}": curve for i, curve in spectra}
            self.paths.append(plot_response(curves, _response_path(path), "spectral response h(λ)"))
        return save_panel(shown, path, title=path.stem.replace("_", " ")), rows

    def _eigenvector_columns(self, aux: dict, size: tuple[int, int]) -> dict[str, np.ndarray]:
        vectors = aux.get("eigenvectors")
        if vectors is None or self.num_eigenvectors < 1:
            return {}
        if vectors.dim() != 4:
            raise ValueError(
                f"head aux 'eigenvectors' must be (B, k, h, w); found {tuple(vectors.shape)}"
            )
        maps = vectors[0, : self.num_eigenvectors].float()
        maps = torch.nn.functional.interpolate(maps[None], size=size, mode="nearest")[0]
        return {f"eigenvector {j + 1}": heat_map(m.cpu().numpy()) for j, m in enumerate(maps)}


def _response_path(panel: Path) -> Path:
    """Where the response plot of a panel's images goes (beside the panel)."""
    return panel.with_name(f"response_{panel.name}")


class SummaryPlots(L.Callback):
    """Per-class score bars and the row-normalised confusion matrix, at the end.

    Written after fitting (from the last validation) and after testing, as
    ``out_dir/{val,test}_class_scores.png`` and ``..._confusion.png``; with a
    W&B logger also as a per-class table and images.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.paths: list[Path] = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, SegmentationModule) or not trainer.is_global_zero:
            return
        result = pl_module.results.get(stage)
        if result is None:
            return
        names = pl_module.class_names
        scores = {"IoU": result.iou.tolist()}
        if result.boundary_iou_per_class is not None:
            scores["Boundary IoU"] = result.boundary_iou_per_class.tolist()
        if result.bf_per_class is not None:
            scores["BF"] = result.bf_per_class.tolist()
        colors = None
        if len(names) == len(CITYSCAPES_CLASSES):
            colors = [c.color for c in CITYSCAPES_CLASSES]
        bars = plot_class_scores(
            names,
            scores,
            self.out_dir / f"{stage}_class_scores.png",
            f"{stage}: mIoU {float(result.miou):.3f}",
            colors=colors,
        )
        confusion = plot_confusion(
            names,
            result.confmat.numpy(),
            self.out_dir / f"{stage}_confusion.png",
            f"{stage} confusion (row-normalised)",
        )
        self.paths += [bars, confusion]
        for logger in wandb_loggers(trainer):
            import wandb

            table = wandb.Table(columns=["class", *scores])
            for i, name in enumerate(names):
                table.add_data(name, *[float(v[i]) for v in scores.values()])
            logger.experiment.log(
                {
                    keys.class_scores(stage): table,
                    keys.class_scores_plot(stage): wandb.Image(str(bars)),
                    keys.confusion(stage): wandb.Image(str(confusion)),
                }
            )


class PredictionExport(L.Callback):
    """Write every val/test prediction as a file in the dataset's own format.

    The split's ``SampleSource`` declares ``writes_predictions`` and implements
    ``write_prediction(index, pred, out_dir)``:
    Cityscapes writes ``{city}/{stem}_pred_labelIds.png`` in label ids (the official
    evaluator's input), folder datasets ``{stem}.png`` in class ids. Files go to
    ``out_dir/{split}/``. Other sources (the synthetic city) export nothing
    (said once in the log).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.written: dict[str, int] = {}
        self._told = False

    # Lightning passes (trainer, module, outputs, batch, batch_idx, dataloader_idx).
    def on_validation_batch_end(self, trainer: L.Trainer, _, outputs, batch, *__) -> None:
        self._write(trainer, outputs, batch, "val")

    def on_test_batch_end(self, trainer: L.Trainer, _, outputs, batch, *__) -> None:
        self._write(trainer, outputs, batch, "test")

    def _write(self, trainer: L.Trainer, outputs, batch: dict, split: str) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "pred" not in outputs:
            return
        source = trainer.datamodule.dataset(split).source
        if not source.writes_predictions:
            if not self._told:
                log.info(
                    "PredictionExport: %s has no prediction file format; nothing exported",
                    type(source).__name__,
                )
                self._told = True
            return
        preds = outputs["pred"].detach().cpu().numpy()
        for index, pred in zip(batch["index"].tolist(), preds, strict=True):
            source.write_prediction(int(index), pred, self.out_dir / split)
        self.written[split] = self.written.get(split, 0) + len(preds)
