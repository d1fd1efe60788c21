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
from omegaconf import DictConfig

from cheeger.module import load_module, stored_normalization
from cheeger.run.callbacks import PredictionExport
from cheeger.run.config_schema import validate_config
from cheeger.run.devices import ensure_mps_fallback
from cheeger.run.report import results_table
from cheeger.run.runner import build_trainer, output_dir, resolve_ckpt_path, save_final_metrics

log = logging.getLogger("cheeger.eval")


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
