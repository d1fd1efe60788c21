"""End-to-end: compose every config option, train, resume, evaluate, overfit."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cheeger.eval import evaluate
from cheeger.module import SegmentationModule
from cheeger.run.checkpoint import read_checkpoint
from cheeger.run.runner import instantiate_group
from cheeger.train import train
from tests.conftest import CONF, OVERFIT, ROOT, TINY, compose, run_train_cli
from tests.faults import kill_at_marker
from tests.test_train_spectral import small

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Datasets read from disk are composed and built in their own tests, on files the
# tests write (tests/data/test_cityscapes.py, tests/data/test_folder.py).
ON_DISK = {("dataset", "cityscapes"), ("dataset", "folder")}
# The spectral groups only exist under head=spectral; tests/test_train_spectral.py runs
# a fast_dev_run of each of their options.
SPECTRAL = {"affinity", "laplacian", "solver", "response"}


@pytest.mark.parametrize(
    "group, option",
    [
        (g, o)
        for g in GROUPS
        if g != "hydra" and g not in SPECTRAL
        for o in options(g)
        if (g, o) not in ON_DISK
    ],
)
def test_every_group_option_composes_and_builds(group, option, compose_train):
    cfg = compose_train(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in ("model", "head", "loss", "optimizer", "scheduler"):
        module = SegmentationModule.from_config(cfg)
        logits, _ = module(torch.zeros(1, 3, 32, 64))
        assert logits.shape == (1, 19, 32, 64)
    elif group == "dataset":
        datamodule = instantiate(cfg.dataset)
        batch = next(iter(datamodule.train_dataloader()))
        assert batch["image"].shape == (4, 3, 32, 64)
    elif group in ("callbacks", "logger"):
        objects = instantiate_group(cfg.get(group), group)
        assert all(o is not None for o in objects)
    elif group == "trainer" and option in ("cpu", "debug", "default"):
        instantiate(cfg.trainer)


def test_typo_in_override_fails_at_compose(tmp_path):
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose("train", [*TINY, "trainer.max_epoch=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="heads"):
        compose("train", [*TINY, "heads=conv"], tmp_path)


def test_train_resume_and_eval(tmp_path, capfd, caplog, recwarn):
    run1 = tmp_path / "run1"
    limits = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
    first = ["trainer.max_epochs=1", "callbacks.panel.every_n_epochs=1"]
    weights = ["loss.class_weights=median_frequency"]
    cfg = compose("train", [*TINY, *limits, *first, *weights], run1)
    with caplog.at_level(logging.INFO):
        value, metrics = train(cfg)
    assert value == metrics["val/mIoU"] and 0.0 <= value <= 1.0
    printed = "".join([*capfd.readouterr(), caplog.text, *(str(w.message) for w in recwarn)])
    # Lines that say nothing about the run (issue 20, section 6), each once printed here.
    for noise in ("weights_only` was not set", "💡 Tip", "LeafSpec", "estimate number of"):
        assert noise not in printed, noise
    assert metrics["train/step_time"] > 0 and metrics["train/peak_memory_mb"] > 50
    last = run1 / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)
    assert state["global_step"] == 2
    # median-frequency weights were computed from the data and stored
    weights = state["state_dict"]["loss_fn.weight"]
    assert weights.shape == (19,) and weights.max() > 1.0 > weights.min()
    assert (run1 / "metrics.csv").read_text().count("val/mIoU") == 1
    assert (run1 / "config.yaml").is_file() and (run1 / "panels" / "epoch_000.png").is_file()
    final = json.loads((run1 / "final_metrics.json").read_text())
    assert final["val/mIoU"] == pytest.approx(value) and set(final) == set(metrics)

    # Resume from the run directory: the step count continues from 2, not from 0.
    run2 = tmp_path / "run2"
    cfg = compose("train", [*TINY, *limits, "trainer.max_epochs=2", f"ckpt_path={run1}"], run2)
    _, metrics2 = train(cfg)
    ckpt2 = read_checkpoint(run2 / "checkpoints" / "last.ckpt")
    assert ckpt2["global_step"] == 4 and ckpt2["epoch"] == 1

    # Evaluating the last checkpoint on the same val batches reproduces the logged mIoU.
    cfg = compose(
        "eval",
        [
            *[o for o in TINY if not o.startswith(("model", "callbacks"))],
            "trainer.limit_val_batches=1",
            f"ckpt_path={run2}",
            "split=val",
        ],
        tmp_path / "eval",
    )
    evaluated = evaluate(cfg)
    assert evaluated["val/mIoU"] == pytest.approx(metrics2["val/mIoU"], abs=1e-6)


def test_overfit_one_batch_reaches_high_pixel_accuracy(compose_train):
    cfg = compose_train(*OVERFIT, "trainer.max_epochs=120")
    _, metrics = train(cfg)
    assert metrics["train/pixel_acc"] > 0.95


def test_wandb_offline_receives_metrics_and_images(compose_train, tmp_path, monkeypatch):
    # fast_dev_run replaces every logger by a dummy, so this is a one-batch real run.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_train(
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "callbacks.panel.every_n_epochs=1",
    )
    train(cfg)
    runs = list((tmp_path / "run").rglob("offline-run-*"))
    assert len(runs) == 1, "expected one offline W&B run under the run directory"
    # wandb's record log is protobuf, which stores keys as plain UTF-8 bytes. wandb-core
    # writes it from its own process and may still be flushing after wandb.finish()
    # returns on a loaded machine (seen once in the suite): poll for a while.
    keys = ["val/mIoU", "val/boundary_iou", "val/trimap_iou@4", "test/mIoU", "train/loss_epoch"]
    deadline = time.monotonic() + 60
    while True:
        records = next(runs[0].glob("run-*.wandb")).read_bytes()
        missing = [key for key in keys if key.encode() not in records]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"{missing} were not logged to W&B"
    assert b"head._target_" in records  # config logged flat, with dotted keys
    media = runs[0] / "files" / "media" / "images"
    logged = {
        str(p.parent.relative_to(media) / p.name.rsplit("_", 2)[0]) for p in media.rglob("*.png")
    }
    assert {"val/panel", "val/confusion", "test/confusion", "val/class_scores_plot"} <= logged
    assert any(p.name.startswith("overlay") for p in media.rglob("*.png")) or any(
        (media / "val").glob("overlay*")
    ), logged


def test_command_line_entry_point(tmp_path):
    done = run_train_cli(*TINY, "debug=fast_dev_run", f"hydra.run.dir={tmp_path / 'cli'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (Path(tmp_path) / "cli" / "config.yaml").is_file()
    assert "mIoU" in done.stdout


# ----------------------------------------------------------------------------- loss options

# Loss options whose terms read aux entries that only head=spectral provides.
NEEDS_SPECTRAL_HEAD = {"ce_affinity", "ce_rayleigh", "spectral"}
# Fast runs: no prediction panels or summary plots.
LEAN = ["debug=fast_dev_run", "callbacks.panel=null", "callbacks.summary_plots=null"]


def loss_term_names(cfg) -> list[str]:
    return list(cfg.loss.terms) if "terms" in cfg.loss else []


@pytest.mark.parametrize("option", options("loss"))
def test_every_loss_option_runs_fast_dev_run(option, compose_train):
    spectral = []
    if option in NEEDS_SPECTRAL_HEAD:
        # On the real spectral head, with every term on from step 0.
        spectral = [o for o in small() if not o.startswith("loss.")]
    cfg = compose_train(f"loss={option}", *LEAN, *spectral)
    if "rayleigh" in loss_term_names(cfg):
        rayleigh = ["loss.terms.rayleigh.start_step=0", "loss.terms.rayleigh.warmup_steps=0"]
        cfg = compose_train(f"loss={option}", *LEAN, *spectral, *rayleigh)
    _, metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    for name in loss_term_names(cfg):
        assert math.isfinite(metrics[f"train/loss/{name}"]) and f"val/loss/{name}" in metrics
    if "rayleigh" in loss_term_names(cfg):
        assert metrics["train/loss/rayleigh"] > 0


@pytest.mark.parametrize("option", sorted(NEEDS_SPECTRAL_HEAD))
def test_spectral_losses_fail_clearly_with_the_conv_head(option, compose_train):
    module = SegmentationModule.from_config(compose_train(f"loss={option}"))
    logits, aux = module(torch.zeros(1, 3, 32, 64))
    with pytest.raises(ValueError, match=r"needs aux\['\w+'\] from head=spectral"):
        module.loss_fn(logits, torch.zeros(1, 32, 64, dtype=torch.long), aux)


def test_composite_loss_logs_terms_warms_up_and_gets_class_weights(tmp_path):
    # CE + 0.5 Lovasz whose weight ramps over 2 steps; 2 training steps, then validation.
    run = tmp_path / "run"
    overrides = [
        *TINY,
        "loss=ce_lovasz",
        "loss.terms.lovasz.warmup_steps=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "callbacks.panel=null",
        "callbacks.summary_plots=null",
    ]
    _, metrics = train(compose("train", overrides, run))
    assert {"train/loss/ce_epoch", "train/loss/lovasz_epoch", "val/loss/ce"} <= set(metrics)
    # The last training step set was global step 1: the Lovasz weight is 0.5 * 1/2.
    expected = metrics["val/loss/ce"] + 0.25 * metrics["val/loss/lovasz"]
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    state = read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert state["loss_fn._extra_state"] == {"step": 1}
    weights = state["loss_fn.members.ce.weight"]  # median frequency, from the training split
    assert weights.shape == (19,) and weights.max() > 1.0 > weights.min()
    # Evaluating the checkpoint weighs the terms as at its step: the same val/loss.
    eval_overrides = [o for o in TINY if not o.startswith(("model", "callbacks"))]
    cfg = compose(
        "eval",
        [*eval_overrides, "trainer.limit_val_batches=1", f"ckpt_path={run}", "split=val"],
        tmp_path / "eval",
    )
    assert evaluate(cfg)["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)


# Two epochs of 8 batches (16 steps), dropout on (its random stream is part of the
# checkpoint), last.ckpt every 3 steps.
RESUMABLE = [
    *TINY,
    "dataset.batch_size=2",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=1",
    "trainer.deterministic=true",
    "head.dropout=0.2",
    "test=false",
    "callbacks.panel=null",
    "callbacks.summary_plots=null",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "trainer.log_every_n_steps=1",  # rows between the checkpoint and the kill exist
]


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt")


def test_killed_then_terminated_run_resumes_to_the_uninterrupted_result(tmp_path):
    _, reference = train(compose("train", RESUMABLE, tmp_path / "reference"))
    expected = last_checkpoint(tmp_path / "reference")
    assert expected["global_step"] == 16

    # 1. A subprocess is SIGKILLed mid-epoch, after last.ckpt was written at step 3, as the
    #    batch of step 4 starts.
    run, marker = tmp_path / "run", tmp_path / "stalled"
    stall = [
        "+callbacks.stall._target_=tests.faults.StallAtStep",
        "+callbacks.stall.step=4",
        f"+callbacks.stall.marker={marker}",
    ]
    command = [sys.executable, "-m", "cheeger.train", *RESUMABLE, *stall, f"hydra.run.dir={run}"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    kill_at_marker(process, marker)
    assert last_checkpoint(run)["global_step"] == 3

    # 2. Resumed with ckpt_path=last in the same run directory, it gets SIGTERM as the batch
    #    of step 4 starts: it finishes that batch, writes last.ckpt and exits with 128 + 15.
    signal_at = ["+callbacks.signal._target_=tests.faults.SignalAtStep", "+callbacks.signal.step=4"]
    with pytest.raises(SystemExit) as stopped:
        train(compose("train", [*RESUMABLE, "ckpt_path=last", *signal_at], run))
    assert stopped.value.code == 128 + signal.SIGTERM
    state = last_checkpoint(run)
    assert state["global_step"] == 5
    assert state["SegmentationDataModule"] == {"seed": 0, "epoch": 0, "batches_done": 5}

    # 3. Resumed again, it ends where the uninterrupted run ended, bit for bit.
    _, resumed = train(compose("train", [*RESUMABLE, "ckpt_path=last"], run))
    final = last_checkpoint(run)
    assert final["global_step"] == expected["global_step"]
    # Every final metric, train and val, except the wall-clock step time.
    timing = {"train/step_time", "train/peak_memory_mb"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in reference.items() if k not in timing
    }
    for name, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name

    # metrics.csv holds the whole history once, as if the run had never stopped. Only the
    # train epoch aggregates of the interrupted epoch 0 differ: they cover the batches
    # after the resume (docs/runs.md, Reliability).
    def partial_epoch(row: dict, key: str) -> bool:
        aggregate = key in ("train/loss_epoch", "train/mIoU", "train/pixel_acc")
        return row["epoch"] == "0" and (aggregate or key.startswith("train/iou/"))

    def logged(directory: Path) -> list[tuple[str, str, str]]:
        with (directory / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        return sorted(
            (row["step"], key, value)
            for row in rows
            for key, value in row.items()
            if value and key not in timing and not partial_epoch(row, key)
        )

    assert logged(run) == logged(tmp_path / "reference")


def test_ckpt_path_last_without_a_checkpoint_starts_fresh_and_says_so(tmp_path, caplog):
    limits = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]
    cfg = compose("train", [*TINY, *limits, "trainer.max_epochs=1", "ckpt_path=last"], tmp_path)
    with (
        caplog.at_level(logging.INFO, logger="cheeger"),
        warnings.catch_warnings(record=True) as seen,
    ):
        warnings.simplefilter("always")
        train(cfg)
    assert "ckpt_path=last: no " in caplog.text and "starting fresh" in caplog.text
    assert "resuming from" not in caplog.text
    assert not [w for w in seen if "save_last" in str(w.message)]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 1
