"""Train a segmentation model: ``python -m cheeger.train [overrides]``.

Composes ``conf/train.yaml``, builds datamodule, module, callbacks, loggers and
trainer, fits, tests the best checkpoint, prints the per-class IoU table, and
returns ``cfg.optimized_metric`` for Hydra sweepers.
"""

from __future__ import annotations

import logging
import math
import signal
import warnings
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cheeger.data.dataset import SampleError
from cheeger.data.transforms import check_crop_fits
from cheeger.module import SegmentationModule
from cheeger.run import keys
from cheeger.run.callbacks import wandb_loggers
from cheeger.run.checkpoint import LastCheckpoint
from cheeger.run.config_schema import validate_config
from cheeger.run.devices import ensure_mps_fallback
from cheeger.run.report import results_table
from cheeger.run.runner import (
    build_trainer,
    output_dir,
    resolve_ckpt_path,
    save_final_metrics,
    save_resolved_config,
)

log = logging.getLogger("cheeger.train")


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Run one training job; returns (optimized metric value, all final metrics).

    Raises:
        SystemExit: status 143 (128 + SIGTERM) when a SIGTERM stopped the fit, after
            ``last.ckpt`` was written (``cheeger.run.checkpoint.LastCheckpoint``).
    """
    validate_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    run_dir = output_dir(cfg)
    save_resolved_config(cfg, run_dir)

    # The run seed also drives the training order and augmentation (resumable).
    datamodule = instantiate(cfg.dataset, seed=cfg.get("seed"))
    module = SegmentationModule.from_config(cfg)
    crop = OmegaConf.select(cfg, "dataset.train_transform.crop")
    if crop is not None:
        # Solver limits known from the config (k, dense max_nodes): fail before any step.
        module.check_input_size(crop, "dataset.train_transform.crop")
        scale = OmegaConf.select(cfg, "dataset.train_transform.scale", default=(1.0, 1.0))
        try:  # one image's size; a bad first sample is left to the data checks
            image = datamodule.dataset("train").raw(0)[0]
        except SampleError:
            image = None
        if image is not None:
            check_crop_fits(crop, image.shape[:2], scale)
    # Every sample of every split the run will use is read now: a bad file fails here, not
    # after training, and labels that cannot be learned (0/255 masks) stop the run.
    datamodule.check_labels(("train", "val", "test") if cfg.get("test") else ("train", "val"))
    trainer = build_trainer(cfg)
    setup_wandb(trainer, cfg)

    last = [cb.path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), last[0] if last else None)
    if ckpt_path == "last" and last:
        # The run's own last.ckpt is missing: a first start, said plainly (Lightning would
        # log "resuming" and then hint at save_last=True).
        log.info("ckpt_path=last: no %s yet, starting fresh", last[0])
        ckpt_path = None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        with warnings.catch_warnings():
            # Lightning cannot see that the datamodule's checkpoint state (not the loader's)
            # resumes the order mid-epoch, and would warn that the resume is unreliable.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException:
        if not trainer.received_sigterm:
            raise
        # Lightning turns SIGTERM into SIGTERMException, a SystemExit with status 0 that a
        # scheduler would read as success (and anything else failing after the signal is
        # part of the same stop); report it and exit as a terminated process does.
        saved = [path for path in last if path.is_file()]
        log.warning(
            "stopped by SIGTERM at global step %d; %s",
            trainer.global_step,
            f"resume with ckpt_path={saved[0]}" if saved else "no checkpoint to resume from",
        )
        _finish_wandb(trainer)
        raise SystemExit(128 + signal.SIGTERM) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if "val" in module.results:
        _print_table(module, "val", f"validation ({datamodule.name}, last epoch)")
    if cfg.get("test") and not trainer.fast_dev_run:
        monitored = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        best = monitored[0].best_model_path if monitored else ""
        # verbose=False: cheeger prints its own per-class table below.
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        _print_table(module, "test", f"test ({datamodule.name}, best checkpoint)")

    # Read by the multirun summary (cheeger/run/sweep_summary.py) and by scripts comparing runs.
    save_final_metrics(metrics, run_dir)
    log.info("run directory: %s", run_dir)
    _finish_wandb(trainer)
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    return (None if value is None or math.isnan(value) else value), metrics


def _print_table(module: SegmentationModule, stage: str, title: str) -> None:
    print(results_table(module.class_names, module.results[stage], title), flush=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}, so W&B can filter on dotted keys."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def setup_wandb(trainer: L.Trainer, cfg: DictConfig) -> None:
    """W&B conventions: flat config, tags naming the head, best-value summaries."""
    for logger in wandb_loggers(trainer):
        run = logger.experiment
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra", None)
        run.config.update(flatten(resolved), allow_val_change=True)
        # Dotless keys the dashboard groups and filters by (cheeger.run.keys).
        run.config.update(keys.run_config_extras(resolved, hydra_choices()), allow_val_change=True)
        head = str(cfg.head.get("_target_", "")).rsplit(".", 1)[-1]
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), head, cfg.dataset.get("name", "")]))
        for name in keys.WANDB_MAX_SUMMARY:
            run.define_metric(name, summary="max")


def hydra_choices() -> dict[str, str]:
    """The option Hydra picked for each config group ({} outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(group): str(option) for group, option in choices.items() if option is not None}


def _finish_wandb(trainer: L.Trainer) -> None:
    # Hydra multirun jobs share one process: close each W&B run or the next job reuses it.
    if wandb_loggers(trainer):
        import wandb

        wandb.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    ensure_mps_fallback(cfg.trainer.get("accelerator"))
    value, _ = train(cfg)
    return value


if __name__ == "__main__":
    main()
