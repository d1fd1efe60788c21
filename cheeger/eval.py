"""Evaluate a checkpoint: ``python -m cheeger.eval ckpt_path=... [split=val|test] [dataset=...]``.

The model (backbone, head, loss) is rebuilt from the config stored inside the
checkpoint, so no model overrides are needed; the dataset, trainer, logger,
inference mode (whole image or sliding windows), an optional fixed post-processing
(``postprocess=image_diffusion``) and prediction export come from
``conf/eval.yaml`` and the command line. The metrics are also written to the run
directory's ``final_metrics.json``. Predictions are written in the
dataset's own format (Cityscapes: label-id PNGs for the official evaluator).
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cheeger.callbacks import PredictionExport
from cheeger.checkpoint import UntrustedCheckpointError, check_stored_targets, read_checkpoint
from cheeger.config_schema import validate_config
from cheeger.devices import ensure_mps_fallback
from cheeger.module import MODEL_KEYS, SegmentationModule
from cheeger.report import results_table
from cheeger.runner import build_trainer, output_dir, resolve_ckpt_path, save_final_metrics

log = logging.getLogger("cheeger.eval")

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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; returns the logged metrics."""
    validate_config(cfg)
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', found {cfg.split!r}")
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path)
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
        raise ValueError(
            f"ckpt_path must name a checkpoint file or run directory, found {ckpt_path!r}"
        )
    L.seed_everything(int(cfg.get("seed", 0)), workers=True)
    module = load_module(ckpt_path, cfg)
    datamodule = instantiate(cfg.dataset, **stored_normalization(module, cfg.dataset, ckpt_path))
    trainer = build_trainer(cfg)
    if cfg.split == "val":
        trainer.validate(module, datamodule=datamodule, verbose=False)
    else:
        trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    save_final_metrics(metrics, output_dir(cfg))
    title = f"{cfg.split} ({datamodule.name}) of {ckpt_path}"
    print(results_table(module.class_names, module.results[cfg.split], title), flush=True)
    for callback in trainer.callbacks:
        if isinstance(callback, PredictionExport) and callback.written.get(cfg.split):
            count, where = callback.written[cfg.split], callback.out_dir / cfg.split
            print(f"{count} predictions written to {where}", flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    ensure_mps_fallback(cfg.trainer.get("accelerator"))
    metrics = evaluate(cfg)
    return metrics.get(f"{cfg.split}/mIoU")


if __name__ == "__main__":
    main()
