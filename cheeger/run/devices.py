"""Accelerator-dependent choices made before a run starts: CPU, CUDA or Apple MPS.

The code itself names no device: tensors follow the module (``pl_module.device``)
and Lightning places the module. What depends on the machine is decided here, as
pure functions of the accelerator name and the environment, so that the decisions
are testable on any machine:

* ``trainer.accelerator=auto`` / ``gpu`` resolve as Lightning resolves them
  (CUDA first, then MPS, then CPU);
* on MPS, operators that Metal does not implement run on the CPU through torch's
  fallback, ``PYTORCH_ENABLE_MPS_FALLBACK=1``. torch reads that variable once,
  when its library loads, so an entry point that finds it unset sets it and
  restarts itself (``ensure_mps_fallback``); one warning says the fallback is on;
* ``trainer.precision=16-mixed`` (fp16 autocast with a gradient scaler) needs CUDA
  (or MPS); on the CPU it becomes ``bf16-mixed``, with a warning naming the key;
* ``trainer.sync_batchnorm=true`` (``trainer=ddp``) needs CUDA: torch's SyncBatchNorm
  refuses CPU and MPS tensors, so it is switched off there, with a warning.

MPS has no float64: ``head.dtype=float64`` is rejected by the spectral head on an
MPS device (``cheeger.models.spectral_head``), and the metrics compute their
float64 ratios from CPU copies of their count states.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"
# Accelerators whose tensors torch's SyncBatchNorm accepts.
SYNC_BATCHNORM_ACCELERATORS = ("cuda",)
# Precisions that mean fp16 autocast with a gradient scaler.
FP16_MIXED = ("16-mixed", "16", 16)


def resolve_accelerator(accelerator: str | None, cuda_available: bool, mps_available: bool) -> str:
    """The device kind a Trainer with ``accelerator`` would use: "cuda", "mps", "cpu" or
    the name itself for others (tpu, ...). ``auto``/``gpu``/None: CUDA, else MPS (gpu and
    auto), else CPU."""
    name = str(accelerator or "auto").lower()
    if name in ("auto", "gpu"):
        if cuda_available:
            return "cuda"
        if mps_available:
            return "mps"
        return "cpu"
    return name


def local_accelerator(accelerator: str | None) -> str:
    """``resolve_accelerator`` on this machine."""
    return resolve_accelerator(
        accelerator, torch.cuda.is_available(), torch.backends.mps.is_available()
    )


def mps_fallback_plan(device: str, environ: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """Environment changes and the one warning for a run on ``device`` (a resolved name).

    Returns:
        (variables to set, warning text or None). Off MPS: nothing. On MPS with
        ``PYTORCH_ENABLE_MPS_FALLBACK`` unset: set it to "1"; with it set to "0" (the
        user's choice): kept, and the warning says unsupported operators will fail.
    """
    if device != "mps":
        return {}, None
    value = environ.get(MPS_FALLBACK)
    if value is not None and value.strip() == "0":
        return {}, (
            f"accelerator=mps with {MPS_FALLBACK}=0: operators that MPS does not implement "
            f"raise errors; unset {MPS_FALLBACK} to run them on the CPU"
        )
    changes = {} if value is not None else {MPS_FALLBACK: "1"}
    return changes, (
        f"accelerator=mps: CPU fallback active ({MPS_FALLBACK}=1): operators that MPS does "
        "not implement run on the CPU (slower, with a copy each way); everything else on MPS"
    )


def ensure_mps_fallback(
    accelerator: str | None,
    environ: dict[str, str] | None = None,
    restart: Callable[[], Any] | None = None,
    warn: Callable[[str], Any] = rank_zero_warn,
) -> None:
    """Apply ``mps_fallback_plan`` for an entry point about to run on ``accelerator``.

    When a variable must change, it is set and the process restarts with the same
    command line (``restart``; default: ``os.execv`` of ``sys.orig_argv``), because torch
    only reads it at import; the restarted process finds it set and warns once.
    """
    environ = os.environ if environ is None else environ
    changes, message = mps_fallback_plan(local_accelerator(accelerator), environ)
    if changes:
        environ.update(changes)
        (restart or _restart_process)()
        return
    if message:
        warn(message)


def _restart_process() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def trainer_overrides(
    trainer_cfg: Mapping[str, Any], device: str
) -> tuple[dict[str, Any], list[str]]:
    """Trainer arguments to change for ``device`` (a resolved name), and why.

    Args:
        trainer_cfg: the ``trainer`` config (reads ``precision`` and ``sync_batchnorm``).
        device: "cuda", "mps", "cpu", ...

    Returns:
        ({argument: new value}, [one warning per change]).
    """
    overrides: dict[str, Any] = {}
    reasons: list[str] = []
    if trainer_cfg.get("precision") in FP16_MIXED and device == "cpu":
        overrides["precision"] = "bf16-mixed"
        reasons.append(
            f"trainer.precision={trainer_cfg.get('precision')} (fp16 autocast with a gradient "
            "scaler) needs a CUDA or MPS device; running on the CPU with "
            "trainer.precision=bf16-mixed instead (set it yourself to silence this)"
        )
    if trainer_cfg.get("sync_batchnorm") and device not in SYNC_BATCHNORM_ACCELERATORS:
        overrides["sync_batchnorm"] = False
        reasons.append(
            f"trainer.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm refuses {device} "
            "tensors); switched off: each process normalises with its own batch statistics "
            "(set trainer.sync_batchnorm=false to silence this)"
        )
    return overrides, reasons
