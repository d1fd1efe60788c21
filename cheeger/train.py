"""Train a segmentation model: ``python -m cheeger.train [overrides]``.

Composes ``conf/train.yaml``, builds datamodule, module, callbacks, loggers and
trainer, fits, tests the best checkpoint, prints the per-class IoU table, and
returns ``cfg.optimized_metric`` for Hydra sweepers.
"""

from __future__ import annotations

import logging
import math

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from cheeger.module import SegmentationModule
from cheeger.report import results_table
from cheeger.runner import build_trainer, output_dir, resolve_ckpt_path, save_resolved_config

log = logging.getLogger("cheeger.train")


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Run one training job; returns (optimized metric value, all final metrics)."""
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    run_dir = output_dir(cfg)
    save_resolved_config(cfg, run_dir)

    datamodule = instantiate(cfg.dataset)
    module = SegmentationModule.from_config(cfg)
    trainer = build_trainer(cfg)

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if "val" in module.results:
        _print_table(module, "val", f"validation ({datamodule.name}, last epoch)")
    if cfg.get("test") and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        _print_table(module, "test", f"test ({datamodule.name}, best checkpoint)")

    log.info("run directory: %s", run_dir)
    _finish_wandb(trainer)
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    return (None if value is None or math.isnan(value) else value), metrics


def _print_table(module: SegmentationModule, stage: str, title: str) -> None:
    print(results_table(module.class_names, module.results[stage], title), flush=True)


def _finish_wandb(trainer: L.Trainer) -> None:
    # Hydra multirun jobs share one process: close each W&B run or the next job reuses it.
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    value, _ = train(cfg)
    return value


if __name__ == "__main__":
    main()
