"""Fault injection for the reliability tests: stall a training run, poison a loss."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from cheeger.losses.base import LossValue, SegmentationLoss


class StallAtStep(L.Callback):
    """Hold a training run at the start of the batch that begins at global step ``step``.

    Writes ``marker`` (the process id) so that a test knows where the run is, then
    waits until SIGTERM has arrived (Lightning's handler sets ``received_sigterm``) or
    ``timeout`` seconds have passed; SIGKILL ends it at any time. Configured from the
    command line: ``+callbacks.stall._target_=tests.faults.StallAtStep ...``.
    """

    def __init__(self, step: int, marker: str, timeout: float = 120.0) -> None:
        self.step = step
        self.marker = Path(marker)
        self.timeout = timeout
        self.stalled = False

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if self.stalled or trainer.global_step != self.step:
            return
        self.stalled = True
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)


class SignalAtStep(L.Callback):
    """Send ``signum`` (default SIGTERM) to this very process when the batch that begins
    at global step ``step`` starts; the batch itself then runs on."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step = step
        self.signum = signum
        self.sent = False

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class PoisonedBatch(L.Callback):
    """Make one image of the training batches at the given global steps all NaN.

    The forward pass then updates BatchNorm's running statistics with NaN before any
    loss exists: the fault that parameter-only protection misses.
    """

    def __init__(self, steps: set[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps:
            batch["image"][0] = float("nan")


class PoisonedLoss(SegmentationLoss):
    """Wrap a loss (its declarations too); on the calls listed in ``poison`` (0-based),
    corrupt it with ``how``.

    ``how``: ``"loss"`` returns NaN; ``"grad"`` keeps the loss finite but makes the
    gradient of one parameter NaN (sqrt(x - x) is 0 with a NaN derivative at 0).
    Evaluation calls (no grad) are passed through and not counted.
    """

    def __init__(self, loss: SegmentationLoss, poison: set[int], how: str = "loss") -> None:
        super().__init__()
        self.loss = loss
        self.reads_aux = loss.reads_aux
        self.needs_dataset_weights = loss.needs_dataset_weights
        self.poison = set(poison)
        self.how = how
        self.calls = 0
        self.parameter: nn.Parameter | None = None

    def set_class_weights(self, weights: Tensor) -> None:
        self.loss.set_class_weights(weights)

    def set_step(self, step: int) -> None:
        self.loss.set_step(step)

    def forward(self, logits: Tensor, target: Tensor, aux: dict) -> Tensor:
        return self.evaluate(logits, target, aux).total

    def evaluate(self, logits: Tensor, target: Tensor, aux: dict) -> LossValue:
        value, terms = self.loss.evaluate(logits, target, aux)
        if not torch.is_grad_enabled():
            return LossValue(value, terms)
        call, self.calls = self.calls, self.calls + 1
        if call not in self.poison:
            return LossValue(value, terms)
        if self.how == "loss":
            return LossValue(value * float("nan"), terms)
        if self.parameter is None:
            raise ValueError("PoisonedLoss(how='grad') needs .parameter set to a model parameter")
        return LossValue(value + torch.sqrt(self.parameter - self.parameter).sum(), terms)


def kill_at_marker(process: subprocess.Popen, marker: Path, timeout: float = 240.0) -> str:
    """SIGKILL ``process`` as soon as it has written ``marker``; returns its output.

    Fails the test if the process ends, or ``timeout`` seconds pass, before the marker.
    """
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if process.poll() is not None:
                output = process.stdout.read()[-3000:] if process.stdout else ""
                raise AssertionError(f"exited with {process.returncode} before {marker}\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker} after {timeout} s")
            time.sleep(0.05)
        process.kill()
    finally:
        output, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, process.returncode
    return output or ""
