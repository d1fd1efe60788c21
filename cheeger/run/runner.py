"""Pieces shared by the entry points (train, eval): building what a config names."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf

from cheeger.run.devices import local_accelerator, trainer_overrides

log = logging.getLogger("cheeger")


def instantiate_group(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, logger).

    Entries set to null are skipped, so ``callbacks.panel=null`` removes one.
    """
    if cfg is None:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(
            f"config group `{group}` must be a mapping of name -> config, found {cfg!r}"
        )
    objects = []
    for name, entry in cfg.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise TypeError(f"`{group}.{name}` must be a config with a _target_, found {entry!r}")
        objects.append(instantiate(entry))
    return objects


# Lightning lines that say nothing about this run: advertisements for other products, a
# note on an internal step count, and a torch deprecation inside Lightning's own code.
NOISE_PREFIXES = ("💡 Tip:", "Loading `train_dataloader` to estimate number of stepping")
NOISE_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_PREFIXES)


def quiet_lightning() -> None:
    """Keep Lightning's :data:`NOISE_PREFIXES` lines and :data:`NOISE_WARNINGS` out of the
    output (idempotent); everything else Lightning says is kept."""
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropNoise())
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer from ``cfg.trainer`` with the callbacks and loggers of the run.

    Arguments the machine cannot honour (fp16 autocast or SyncBatchNorm on the CPU) are
    changed, with a warning each (``cheeger.run.devices.trainer_overrides``).
    """
    quiet_lightning()
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:
        # Lightning refuses a LearningRateMonitor without a logger; it has nothing to write to.
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    if cfg.trainer.get("enable_progress_bar") is False:
        # `trainer.enable_progress_bar=false` wins over callbacks.progress_bar (Lightning
        # would refuse the combination).
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    device = local_accelerator(cfg.trainer.get("accelerator"))
    overrides, reasons = trainer_overrides(cfg.trainer, device)
    for reason in reasons:
        rank_zero_warn(reason)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def resolve_ckpt_path(ckpt_path: str | None, last: Path | None = None) -> str | None:
    """Accept a checkpoint file, a run directory (-> its checkpoints/last.ckpt), or
    Lightning's keywords ``last``/``best``/``hpc``/``registry``.

    ``last`` is the run's own ``last.ckpt`` (``last``, the path the run's
    ``LastCheckpoint`` writes) when that file exists; otherwise it is left to
    Lightning, which looks for ``last*.ckpt`` next to the ModelCheckpoint files and
    starts from scratch with a warning when there is none.

    Raises:
        FileNotFoundError: naming the ``ckpt_path`` value and what was looked for.
    """
    if ckpt_path == "last" and last is not None and Path(last).is_file():
        return str(last)
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
        return ckpt_path
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        candidate = path / "checkpoints" / "last.ckpt"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path!r} is a directory without checkpoints/last.ckpt; "
                "pass a .ckpt file or a run directory written by cheeger.train"
            )
        return str(candidate)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no such checkpoint file")
    return str(path)


def output_dir(cfg: DictConfig) -> Path:
    """The run directory, ``cfg.paths.output_dir`` (Hydra's run dir by default)."""
    return Path(cfg.paths.output_dir)


def save_resolved_config(cfg: DictConfig, directory: Path) -> Path:
    """Write the fully resolved config of the run to ``directory/config.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


FINAL_METRICS_FILE = "final_metrics.json"


def save_final_metrics(metrics: dict[str, float], directory: Path) -> Path:
    """Write the run's last scalar metrics to ``directory/final_metrics.json``.

    NaN (a metric with nothing to average, e.g. an empty class set) is written as null:
    strict JSON has no NaN, and readers outside Python would reject the file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FINAL_METRICS_FILE
    clean = {name: None if math.isnan(value) else value for name, value in metrics.items()}
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return path


def load_final_metrics(directory: Path) -> dict[str, float | None]:
    """The metrics ``save_final_metrics`` wrote in ``directory`` (NaN as None); {} when the
    run wrote none (it failed or is still running)."""
    path = directory / FINAL_METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
