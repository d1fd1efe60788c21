"""cheeger.run.devices: accelerator resolution, the MPS CPU fallback, precision and SyncBatchNorm
choices; and mixed-precision runs of both heads on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from cheeger.run import devices
from cheeger.run.devices import (
    MPS_FALLBACK,
    ensure_mps_fallback,
    mps_fallback_plan,
    resolve_accelerator,
    trainer_overrides,
)
from cheeger.run.runner import build_trainer
from cheeger.train import train
from tests.test_train_spectral import small


@pytest.mark.parametrize(
    "name, cuda, mps, expected",
    [
        ("auto", True, True, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", False, False, "cpu"),
        (None, False, False, "cpu"),
        ("gpu", False, True, "mps"),
        ("gpu", True, False, "cuda"),
        ("cpu", True, True, "cpu"),
        ("MPS", False, False, "mps"),
        ("cuda", False, False, "cuda"),
    ],
)
def test_accelerator_resolves_as_lightning_picks(name, cuda, mps, expected):
    assert resolve_accelerator(name, cuda_available=cuda, mps_available=mps) == expected


def test_mps_fallback_is_set_on_mps_only_and_a_user_choice_is_kept():
    assert mps_fallback_plan("cpu", {}) == ({}, None)
    assert mps_fallback_plan("cuda", {}) == ({}, None)
    changes, message = mps_fallback_plan("mps", {})
    assert changes == {MPS_FALLBACK: "1"}
    assert f"CPU fallback active ({MPS_FALLBACK}=1)" in message
    assert mps_fallback_plan("mps", {MPS_FALLBACK: "1"}) == ({}, message)
    changes, message = mps_fallback_plan("mps", {MPS_FALLBACK: "0"})
    assert changes == {} and "raise errors" in message


def test_entry_point_restarts_once_with_the_fallback_and_warns_once(monkeypatch):
    monkeypatch.setattr(
        devices, "local_accelerator", lambda name: "mps" if name == "mps" else "cpu"
    )
    environ: dict[str, str] = {}
    restarts, warnings = [], []

    def run_entry_point() -> None:  # what each (re)started process does first
        ensure_mps_fallback(
            "mps", environ, restart=lambda: restarts.append(dict(environ)), warn=warnings.append
        )

    run_entry_point()  # variable unset: set it, restart, say nothing yet
    assert restarts == [{MPS_FALLBACK: "1"}] and warnings == []
    run_entry_point()  # the restarted process: fallback active, one warning
    assert len(restarts) == 1 and len(warnings) == 1
    assert MPS_FALLBACK in warnings[0]
    # Another accelerator: no change, no restart, no warning.
    other: dict[str, str] = {}
    ensure_mps_fallback("cpu", other, restart=lambda: restarts.append(1), warn=warnings.append)
    assert other == {} and len(restarts) == 1 and len(warnings) == 1


def test_trainer_overrides_name_the_key_and_the_fix():
    cfg = {"precision": "16-mixed", "sync_batchnorm": True}
    overrides, reasons = trainer_overrides(cfg, "cpu")
    assert overrides == {"precision": "bf16-mixed", "sync_batchnorm": False}
    assert "trainer.precision=16-mixed" in reasons[0] and "bf16-mixed" in reasons[0]
    assert "trainer.sync_batchnorm=false" in reasons[1]
    assert trainer_overrides(cfg, "cuda") == ({}, [])
    overrides, _ = trainer_overrides(cfg, "mps")  # fp16 autocast exists on MPS; SyncBN does not
    assert overrides == {"sync_batchnorm": False}
    assert trainer_overrides({"precision": "bf16-mixed"}, "cpu") == ({}, [])


def test_cpu_trainer_gets_bf16_for_16_mixed_and_no_sync_batchnorm(compose_train):
    cfg = compose_train("trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=16-mixed")
    with pytest.warns(UserWarning) as caught:
        trainer = build_trainer(cfg)
    messages = [str(w.message) for w in caught]
    assert any("trainer.precision=16-mixed" in m for m in messages)
    assert any("trainer.sync_batchnorm=true needs CUDA" in m for m in messages)
    assert trainer.precision == "bf16-mixed"
    assert trainer.strategy._layer_sync is None  # no SyncBatchNorm conversion at fit


@pytest.mark.parametrize("head", ["conv", "spectral"])
def test_bf16_mixed_fast_dev_run(head, compose_train):
    overrides = small() if head == "spectral" else []
    cfg = compose_train(*overrides, "trainer.precision=bf16-mixed", "debug=fast_dev_run")
    _, metrics = train(cfg)
    assert math.isfinite(metrics["train/loss_step"]) and math.isfinite(metrics["val/loss"])
    assert 0.0 <= metrics["val/mIoU"] <= 1.0


class ReportsMps(torch.Tensor):
    """A CPU tensor that reports an MPS device (no MPS here; the check reads only that)."""

    @property
    def device(self) -> torch.device:
        return torch.device("mps")


def test_spectral_head_refuses_float64_on_mps():
    from tests.models.test_spectral_head import blocky_features, make_head

    head = make_head()  # dtype float64
    features = blocky_features().as_subclass(ReportsMps)
    with pytest.raises(ValueError, match="head.dtype=float64 cannot run on MPS"):
        head(features)
