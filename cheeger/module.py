"""The LightningModule: backbone -> head -> loss, with dataset-level IoU metrics.

``SegmentationModule`` does not know which head it drives: any
``SegmentationHead`` (``features, size -> logits, aux``) slots in, and the loss
receives the head's auxiliaries. Each stage's metrics are one ``StageMetrics``
(a torchmetrics ``MetricCollection`` computed into a ``StageResult``) whose count
states are summed across processes, so ``val/mIoU`` is the dataset mIoU under any
data-parallel strategy. The val/test
losses are image-weighted means kept in summed states as well (``WeightedMean``):
Lightning's own epoch reduction divides the image count by the world size in
integer arithmetic, which is wrong when ranks hold different numbers of images.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from cheeger.data.classes import IGNORE_INDEX
from cheeger.data.datamodule import SegmentationDataModule
from cheeger.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from cheeger.data.skipping import SKIPPED_KEY, SkippedSample, skip_report
from cheeger.data.statistics import median_frequency_weights
from cheeger.losses.base import LossValue, SegmentationLoss
from cheeger.metrics.collection import StageMetrics
from cheeger.metrics.mean import WeightedMean
from cheeger.metrics.results import StageResult
from cheeger.models.auxiliaries import Auxiliaries
from cheeger.models.backbone import Backbone
from cheeger.models.heads import SegmentationHead
from cheeger.models.solvers import SpectralInfo
from cheeger.run import keys
from cheeger.run.checkpoint import (
    UntrustedCheckpointError,
    check_stored_targets,
    read_checkpoint,
)

log = logging.getLogger("cheeger")

STAGES = ("train", "val", "test")
# Config groups a checkpoint must carry to rebuild its module without the run's files.
MODEL_KEYS = ("model", "head", "loss", "postprocess")


class SegmentationModule(L.LightningModule):
    """Semantic segmentation with a swappable head.

    Args:
        backbone: image (B, 3, H, W) -> features (B, C, h, w); must expose ``out_channels``.
        head: features -> (logits (B, K, H, W), aux dict).
        loss: ``loss(logits, target, aux) -> scalar``.
        optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (a Hydra partial).
        scheduler: ``scheduler(optimizer, total_steps=...) -> LRScheduler`` or None;
            stepped every optimizer step.
        num_classes: K.
        ignore_index: label never counted in loss or metrics.
        class_names: K names, for per-class logs and tables.
        dilation_ratio: Boundary IoU band width relative to the image diagonal.
        bf_tolerance: BF score match distance in pixels.
        trimap_widths: trimap band widths (pixels) for ``trimap_iou@w``.
        inference: how val/test turn an image into logits,
            ``inference(model_fn, image, multiple) -> logits``
            (``cheeger.models.inference.Inference``: padded whole image or sliding
            windows); None: one forward pass. With it the val/test loss gets no head
            auxiliaries.
        postprocess: ``postprocess(logits, image) -> logits`` applied outside training
            (validation, test, predict), e.g. the fixed ``ImageDiffusion`` control; None:
            the head's logits as they are.

    Logged per stage: ``loss``, ``loss/<term>`` (the terms ``loss_fn.evaluate`` returns,
    for a ``CompositeLoss``), ``mIoU``, ``pixel_acc``, ``iou/<class>``; on val and
    test also ``boundary_iou``, ``bf`` and ``trimap_iou@<w>`` for each width.

    Bad samples left out by ``dataset.skip_bad`` (``cheeger.data.skipping``): counted
    per epoch as ``<stage>/skipped_samples`` (summed over ranks) and listed in one
    warning at the epoch's end; a batch of bad samples only is no step at all (no
    loss, no metric update; in training no parameter update, the step still counts).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: SegmentationHead,
        loss: SegmentationLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 19,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        dilation_ratio: float = 0.02,
        bf_tolerance: float = 2.0,
        trimap_widths: Sequence[int] = (1, 2, 4, 8, 16),
        inference: Callable[..., Tensor] | None = None,
        postprocess: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for key, value, kind in (
            ("model", backbone, Backbone),
            ("head", head, SegmentationHead),
            ("loss", loss, SegmentationLoss),
        ):
            if not isinstance(value, kind):
                raise TypeError(
                    f"{key} must build a {kind.__module__}.{kind.__name__} (the contract "
                    f"{kind.__module__.replace('.', '/')}.py declares), "
                    f"found {type(value).__name__}"
                )
        self.backbone = backbone
        self.head = head
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = (
            list(class_names) if class_names else [str(i) for i in range(num_classes)]
        )
        self.inference = inference
        self.postprocess = postprocess
        # Boundary metrics only where they are read (val, test): they cost a few poolings.
        # (ModuleDict keys may not shadow nn.Module attributes such as `train`.)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": StageMetrics(
                    num_classes,
                    ignore_index,
                    boundaries=stage != "train",
                    dilation_ratio=dilation_ratio,
                    bf_tolerance=bf_tolerance,
                    trimap_widths=trimap_widths,
                )
                for stage in STAGES
            }
        )
        # Image-weighted epoch means of the val/test loss terms, by logged name; created on
        # first use (the term names are the loss's), on the loss's device.
        self.loss_means: dict[str, WeightedMean] = {}
        # Filled by on_*_epoch_end: the last epoch's scores per stage.
        self.results: dict[str, StageResult] = {}
        # Samples skipped by dataset.skip_bad: in the running epoch (a stage's entry
        # exists once a batch came from a skipping loader) and in the last finished one.
        self._skipped: dict[str, list[SkippedSample]] = {}
        self.skipped_samples: dict[str, list[SkippedSample]] = {}
        # The config subtrees that rebuild this module; stored in every checkpoint.
        self.model_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ build
    @classmethod
    def from_config(cls, cfg: DictConfig) -> SegmentationModule:
        """Instantiate backbone, head, loss, optimizer and scheduler from a run config.

        The head gets ``in_channels`` from the backbone and ``num_classes`` from
        ``cfg.dataset``; the loss gets ``num_classes`` and ``ignore_index``.
        """
        num_classes = int(cfg.dataset.num_classes)
        ignore_index = int(cfg.dataset.get("ignore_index", IGNORE_INDEX))
        backbone = instantiate(cfg.model)
        head = instantiate(cfg.head, in_channels=backbone.out_channels, num_classes=num_classes)
        loss = instantiate(cfg.loss, num_classes=num_classes, ignore_index=ignore_index)
        optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else None
        scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
        postprocess = instantiate(cfg.postprocess) if cfg.get("postprocess") else None
        metrics = cfg.get("metrics") or {}
        module = cls(
            backbone,
            head,
            loss,
            optimizer,
            scheduler,
            num_classes=num_classes,
            ignore_index=ignore_index,
            class_names=cfg.dataset.get("class_names"),
            postprocess=postprocess,
            **metrics,
        )
        module.model_config = {
            key: OmegaConf.to_container(cfg[key], resolve=True)
            for key in MODEL_KEYS
            if cfg.get(key) is not None
        }
        palette = cfg.dataset.get("palette")
        module.model_config["dataset"] = {
            "num_classes": num_classes,
            "ignore_index": ignore_index,
            "class_names": module.class_names,
            "palette": None if palette is None else OmegaConf.to_container(palette),
            # The input normalisation the weights were trained with: eval and predict
            # must feed images the same way (stored_normalization below).
            "mean": [float(v) for v in cfg.dataset.get("mean", IMAGENET_MEAN)],
            "std": [float(v) for v in cfg.dataset.get("std", IMAGENET_STD)],
        }
        return module

    def setup(self, stage: str) -> None:
        # Class weights derived from the data are computed once, before the first
        # step; a resumed run restores them from the checkpoint afterwards.
        if stage != "fit" or not self.loss_fn.needs_dataset_weights:
            return
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, SegmentationDataModule):
            raise ValueError(
                "loss.class_weights=median_frequency needs a SegmentationDataModule "
                "to count classes"
            )
        # The training split's histogram, counted (or read from its cache) once per run.
        weights = median_frequency_weights(datamodule.label_histogram("train").counts_tensor())
        self.loss_fn.set_class_weights(weights)
        log.info("median-frequency class weights: %s", [round(w, 3) for w in weights.tolist()])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model_config is not None:
            checkpoint["cheeger_model_config"] = self.model_config

    # ---------------------------------------------------------------- forward
    def forward(self, image: Tensor) -> tuple[Tensor, dict]:
        """(B, 3, H, W) -> logits (B, K, H, W) and the head's auxiliaries."""
        features = self.backbone(image)
        logits, aux = self.head(features, image)
        if self.postprocess is not None and not self.training:
            logits = self.postprocess(logits, image)
        return logits, aux

    def check_input_size(self, size: Sequence[int], key: str) -> None:
        """Fail before training when the head cannot take ``size`` images (config ``key``)."""
        stride = self.backbone.output_stride
        height, width = (int(v) for v in size)
        try:
            self.head.check_sizes((height // stride, width // stride), (height, width))
        except ValueError as error:
            raise ValueError(
                f"{key}={[height, width]} with model.output_stride={stride}: {error}"
            ) from None

    @property
    def input_multiple(self) -> int:
        """Image sizes the backbone accepts are multiples of this (1: any size)."""
        return self.backbone.input_multiple

    def _needs_inference(self, image: Tensor) -> bool:
        """Sliding windows, or an image the backbone cannot take as it is (padding)."""
        multiple = self.input_multiple
        fits = all(size % multiple == 0 for size in image.shape[-2:])
        return self.inference.mode != "whole" or not fits

    def _step(self, batch: dict, stage: str) -> tuple[Tensor | None, Tensor | None]:
        if SKIPPED_KEY in batch:
            self._skipped.setdefault(stage, []).extend(batch[SKIPPED_KEY])
            if "image" not in batch:  # every sample of the batch was bad
                return None, None
        image, mask = batch["image"], batch["mask"]
        if stage != "train" and self.inference is not None and self._needs_inference(image):
            logits = self.inference(lambda x: self(x)[0], image, self.input_multiple)
            aux = None  # windows and padding leave no whole-image auxiliaries
        else:
            logits, aux = self(image)
        if aux is None and self.loss_fn.reads_aux:
            # A loss term on the head's graph cannot be evaluated on stitched windows:
            # metrics are still computed, the loss is not logged for this stage.
            loss = None
        else:
            loss = self.loss_fn.evaluate(logits, mask, aux or {})
        pred = logits.detach().argmax(dim=1)
        self.stage_metrics(stage).update(pred, mask, aux)
        if stage == "train" and aux is not None:
            self._log_spectral(aux, image.shape[0])
        if loss is None:
            return None, pred
        self._log_loss(stage, loss, image.shape[0])
        return loss.total, pred

    def _log_spectral(self, aux: Mapping[str, Any], batch_size: int) -> None:
        """Per-step diagnostics of a spectral head: solver iterations and eigen-residual,
        the Fiedler value and the largest eigenvalue computed (batch means), and the noise
        energy when the head computed it (a loss read it; it is never computed for this)."""
        values: dict[str, Any] = {}
        info = aux.get("spectral_info")
        if isinstance(info, SpectralInfo):
            values[keys.SOLVER_ITERATIONS] = info.iterations
            values[keys.SOLVER_RESIDUAL] = info.residual
        eigenvalues = aux.get("eigenvalues")
        if eigenvalues is not None and eigenvalues.shape[-1] >= 2:
            values[keys.FIEDLER] = eigenvalues[:, 1].detach().float().mean()
            values[keys.LAMBDA_K] = eigenvalues[:, -1].detach().float().mean()
        if isinstance(aux, Auxiliaries) and aux.is_computed("noise_energy"):
            values[keys.NOISE_ENERGY] = aux["noise_energy"].detach().float().mean()
        for name, value in values.items():
            if value is not None:
                value = value if isinstance(value, Tensor) else float(value)
                self.log(name, value, on_step=True, batch_size=batch_size)

    def _log_loss(self, stage: str, loss: LossValue, batch_size: int) -> None:
        values = {keys.metric(stage, keys.LOSS): loss.total}
        values.update({keys.loss_term(stage, n): v for n, v in loss.terms.items()})
        if stage == "train":
            # Per step and per rank: the epoch value is this rank's mean (equal batch counts).
            for name, value in values.items():
                bar = name == keys.metric("train", keys.LOSS)
                self.log(
                    name, value, on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=bar
                )
            return
        for name, value in values.items():
            if name not in self.loss_means:
                self.loss_means[name] = WeightedMean().to(value.device)
            self.loss_means[name].update(value, batch_size)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        # Losses with warm-up schedules (CompositeLoss) weigh their terms by the step.
        self.loss_fn.set_step(self.global_step)
        loss = self._step(batch, "train")[0]
        if loss is None and "image" not in batch and self._world_size() > 1:
            # Every sample of this rank's batch was bad (dataset.skip_bad). Returning None
            # would skip backward on this rank only and leave the others waiting in the
            # gradient all-reduce: contribute a zero gradient to every parameter instead.
            return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
        return loss

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    # The predictions are returned for callbacks (e.g. PredictionExport), not kept.
    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor] | None:
        pred = self._step(batch, "val")[1]
        return None if pred is None else {"pred": pred}

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor] | None:
        pred = self._step(batch, "test")[1]
        return None if pred is None else {"pred": pred}

    def predict_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits, _ = self(batch["image"])
        return logits.argmax(dim=1)

    # ---------------------------------------------------------------- metrics
    def _report_skipped(self, stage: str) -> None:
        skipped = self._skipped.pop(stage, None)
        if skipped is None or (self._trainer is not None and self._trainer.sanity_checking):
            return  # no skipping loader; or the sanity check (its epoch is not counted)
        self.skipped_samples[stage] = skipped
        self.log(
            keys.metric(stage, keys.SKIPPED_SAMPLES),
            float(len(skipped)),
            reduce_fx="sum",
            sync_dist=True,
        )
        if skipped:
            log.warning(skip_report(stage, self.current_epoch, skipped))

    def _end_epoch(self, stage: str) -> None:
        self._report_skipped(stage)
        with warnings.catch_warnings():
            # Every value logged here was computed from states already summed over the
            # ranks, so it is the same on all of them: Lightning's advice to average it
            # across devices (sync_dist=True) does not apply.
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*when logging on epoch")
            self._log_epoch_losses(stage)
            self._log_epoch_metrics(stage)

    def _log_epoch_losses(self, stage: str) -> None:
        for name, mean in self.loss_means.items():
            if name.startswith(f"{stage}/") and mean.update_called:
                self.log(name, mean.compute().float())
                mean.reset()

    def stage_metrics(self, stage: str) -> StageMetrics:
        """The metrics that ``stage`` ('train', 'val' or 'test') updates."""
        return self.metrics[f"{stage}_metrics"]

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.stage_metrics(stage)
        if not metrics.update_called:
            return
        # compute() syncs the count states across ranks: every rank logs the same values.
        result = metrics.compute()
        metrics.reset()
        self.results[stage] = result
        self.log(keys.metric(stage, keys.MIOU), result.miou.float(), prog_bar=stage == "val")
        self.log(keys.metric(stage, keys.PIXEL_ACC), result.pixel_acc.float())
        for name, iou in zip(self.class_names, result.iou.tolist(), strict=True):
            if not math.isnan(iou):
                self.log(keys.class_iou(stage, name), iou)
        if result.boundary_iou is not None:
            self.log(
                keys.metric(stage, keys.BOUNDARY_IOU), result.boundary_iou.float(), prog_bar=True
            )
            self.log(keys.metric(stage, keys.BF), result.bf.float())
        for width, value in result.trimap.items():
            self.log(keys.trimap(stage, width), value.float())
        if result.edge_auc is not None:
            self.log(keys.metric(stage, keys.EDGE_AUC), result.edge_auc.float())

    def on_train_epoch_end(self) -> None:
        self._end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("optimizer config is missing: set the `optimizer` group (e.g. adamw)")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=max(1, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


# ------------------------------------------------------- from a checkpoint
# Config keys a checkpoint may carry that evaluation never instantiates.
TRAINING_ONLY_KEYS = ("optimizer", "scheduler")


def load_module(ckpt_path: str, cfg: DictConfig | None = None) -> SegmentationModule:
    """Rebuild a ``SegmentationModule`` from a checkpoint written by cheeger.train.

    ``cfg`` (optional) supplies the metric settings, the inference mode, and the
    class count the checkpoint must match.

    The file is read as data only, and the stored config is rebuilt only if every
    ``_target_`` in it is a cheeger class or function (``optimizer`` and ``scheduler``
    entries are dropped: evaluation never builds them).

    Raises:
        UntrustedCheckpointError: a pickle payload, an unexpected config key or a
            ``_target_`` outside cheeger.
        CorruptCheckpointError: an empty, truncated or random file.
        ValueError: the checkpoint has no stored model config, or its class count
            differs from ``cfg.dataset.num_classes``.
    """
    checkpoint = read_checkpoint(ckpt_path)
    stored = checkpoint.get("cheeger_model_config")
    if stored is None:
        raise ValueError(
            f"ckpt_path={ckpt_path!r} has no 'cheeger_model_config'; "
            "it was not written by cheeger.train"
        )
    if not isinstance(stored, dict):
        raise UntrustedCheckpointError(
            f"untrusted checkpoint content in {ckpt_path!r}: 'cheeger_model_config' must be "
            f"a dict, found {type(stored).__name__}"
        )
    # Training-only entries are not rebuilt for evaluation; anything unknown is refused.
    stored = {k: v for k, v in stored.items() if k not in TRAINING_ONLY_KEYS}
    unknown = sorted(set(stored) - {*MODEL_KEYS, "dataset"})
    if unknown:
        raise UntrustedCheckpointError(
            f"untrusted checkpoint content in {ckpt_path!r}: cheeger_model_config has "
            f"unexpected keys {unknown}; expected some of {[*MODEL_KEYS, 'dataset']}"
        )
    check_stored_targets(stored, ckpt_path, "cheeger_model_config")
    model_cfg = OmegaConf.create(stored)
    if cfg is not None and cfg.get("metrics") is not None:
        model_cfg.metrics = cfg.metrics
    if cfg is not None and int(cfg.dataset.num_classes) != int(model_cfg.dataset.num_classes):
        raise ValueError(
            f"checkpoint predicts {model_cfg.dataset.num_classes} classes but "
            f"dataset.num_classes={cfg.dataset.num_classes}"
        )
    module = SegmentationModule.from_config(model_cfg)
    for key in ("mean", "std"):
        # from_config fills in the defaults; an older checkpoint's lack of them must show.
        module.model_config["dataset"][key] = stored.get("dataset", {}).get(key)
    module.load_state_dict(checkpoint["state_dict"])
    if cfg is not None and cfg.get("inference") is not None:
        module.inference = instantiate(cfg.inference)
    if cfg is not None and cfg.get("postprocess") is not None:
        # An evaluation-time choice (no weights): e.g. the fixed image-diffusion control.
        module.postprocess = instantiate(cfg.postprocess)
    return module


def stored_normalization(
    module: SegmentationModule,
    dataset_cfg: DictConfig | None,
    ckpt_path: str,
    prefix: str = "dataset.",
) -> dict[str, list[float]]:
    """``{"mean": ..., "std": ...}`` the checkpoint was trained with, to build the eval data.

    The stored values win over the dataset config's: feeding a model differently
    normalised images silently costs accuracy. A config that asks for other values
    gets a warning naming both. A checkpoint from before the normalisation was stored
    keeps the config's values (returns ``{}``), with a warning. ``prefix`` is where
    ``mean``/``std`` sit in the user's config, for the messages.
    """
    stored = (module.model_config or {}).get("dataset", {})
    asked = {
        key: [float(v) for v in dataset_cfg[key]]
        for key in ("mean", "std")
        if dataset_cfg is not None and dataset_cfg.get(key) is not None
    }
    if stored.get("mean") is None or stored.get("std") is None:
        log.warning(
            "%s stores no input normalisation (written before cheeger kept it); using "
            "%smean/std from the config: %s",
            ckpt_path,
            prefix,
            asked or "the ImageNet defaults",
        )
        return {}
    used = {key: [float(v) for v in stored[key]] for key in ("mean", "std")}
    for key, value in asked.items():
        if value != used[key]:
            log.warning(
                "%s%s=%s differs from the %s the model was trained with (%s, stored in "
                "%s); using the stored one",
                prefix,
                key,
                value,
                key,
                used[key],
                ckpt_path,
            )
    return used
