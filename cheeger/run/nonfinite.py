"""Skip optimizer steps whose loss or gradients are not finite; stop after too many in a row.

One NaN or Inf (a degenerate graph in a spectral head, an overflow) would otherwise
reach the weights through the optimizer and poison every later step. The guard
checks each step before the optimizer runs: the loss of every micro-batch that
went into it (``on_before_backward``) and every gradient
(``on_before_optimizer_step``, after the backward, before clipping). A bad step
is skipped by setting all gradients of the optimizer's parameters to None: torch
optimizers leave such parameters alone entirely, so there is no update, no weight
decay and no change to AdamW's moments or step count. The learning-rate scheduler
and ``global_step`` still advance, so a skipped step counts as a step.

The forward pass of a bad batch has already changed state the optimizer does not
own: BatchNorm's running mean and variance (one NaN image turns them NaN, and every
eval-mode logit after it). The guard therefore copies the module's buffers at the
start of each optimizer step's first micro-batch and puts them back when the step
is skipped; buffers that came out non-finite make the step bad as well. Parameters
that are already non-finite when a step starts (a finite but enormous update, e.g.
``optimizer.lr=1e6``) cannot be repaired: the run stops at once, saying the state is
poisoned, and ``AtomicCheckpointIO`` refuses to write such a state, so every
checkpoint on disk stays finite.

Each skip is counted, logged as a warning and as ``train/skipped_steps`` (running
total), and after ``max_consecutive_bad_steps`` bad steps in a row the run stops
with :class:`NonFiniteTrainingError`. Counts are part of the callback's state, so
they survive a resume. Under data parallelism the decision is reduced over ranks
(any rank bad -> all skip), so the replicas stay identical.

With a gradient scaler (``precision=16-mixed``), the scaler owns overflowing
gradients (it skips those steps and lowers its scale, which is expected early in
training), so gradients are not checked there; loss, buffers and parameters are.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

log = logging.getLogger("cheeger")

CONFIG_KEY = "callbacks.nonfinite.max_consecutive_bad_steps"


class NonFiniteTrainingError(RuntimeError):
    """Raised when too many consecutive optimizer steps had a non-finite loss or gradient."""


class NonFiniteGuard(L.Callback):
    """Skip, count and log optimizer steps with a NaN/Inf loss or gradient (module doc).

    Args:
        max_consecutive_bad_steps: stop the run when this many steps in a row were bad.
    """

    def __init__(self, max_consecutive_bad_steps: int = 5) -> None:
        if (
            isinstance(max_consecutive_bad_steps, bool)
            or not isinstance(max_consecutive_bad_steps, int)
            or max_consecutive_bad_steps < 1
        ):
            raise ValueError(
                f"{CONFIG_KEY} must be an int >= 1, found {max_consecutive_bad_steps!r}"
            )
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.skipped_steps = 0
        self.consecutive_bad_steps = 0
        self._losses: list[Tensor] = []
        self._buffers: list[Tensor] | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # The state before this optimizer step's first micro-batch, restored if it is bad.
        if self._buffers is None:
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, self._losses = self._losses, []
        saved, self._buffers = self._buffers, None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        check_grads = getattr(trainer.precision_plugin, "scaler", None) is None
        grads = [p.grad for p in params if p.grad is not None] if check_grads else []
        buffers = [b for b in pl_module.buffers() if b.is_floating_point()]
        # One host synchronisation for all the checks of the step.
        flags = [
            torch.isfinite(value).all() for value in (*losses, *grads, *buffers, *params)
        ]
        bad = bool(flags) and not bool(torch.stack(flags).all())
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive_bad_steps = 0
            return
        poisoned = non_finite_state(pl_module, buffers=False)
        if poisoned:
            raise NonFiniteTrainingError(
                f"the model's parameters are no longer finite at global step "
                f"{trainer.global_step} ({poisoned}): an earlier update with finite gradients "
                "overflowed them. Skipping steps cannot repair this; lower optimizer.lr or "
                "clip gradients (trainer.gradient_clip_val), and resume from a checkpoint "
                "written before (cheeger never writes a non-finite state)."
            )
        what = _describe(losses, pl_module, check_grads)
        for p in params:
            p.grad = None
        if saved is not None:
            with torch.no_grad():
                for buffer, value in zip(pl_module.buffers(), saved, strict=True):
                    buffer.copy_(value)
        self.skipped_steps += 1
        self.consecutive_bad_steps += 1
        log.warning(
            "skipped the optimizer step at global step %d (epoch %d): %s; %d skipped in "
            "total, %d in a row",
            trainer.global_step,
            trainer.current_epoch,
            what,
            self.skipped_steps,
            self.consecutive_bad_steps,
        )
        if self.consecutive_bad_steps >= self.max_consecutive_bad_steps:
            raise NonFiniteTrainingError(
                f"{self.consecutive_bad_steps} consecutive optimizer steps had a non-finite "
                f"loss, gradient or buffer (the last at global step {trainer.global_step}: "
                f"{what}); stopping because {CONFIG_KEY} = {self.max_consecutive_bad_steps}. "
                "The model state is still finite (bad steps changed nothing). Bad steps in "
                "a row usually mean the weights themselves overflow the forward pass: lower "
                f"optimizer.lr (= {_learning_rate(trainer):g}) or clip gradients "
                f"(trainer.gradient_clip_val). Raise {CONFIG_KEY} only for rare bad batches "
                "(dataset.skip_bad leaves unreadable samples out)."
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        pl_module.log(
            "train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped_steps": self.skipped_steps,
            "consecutive_bad_steps": self.consecutive_bad_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive_bad_steps = int(state_dict["consecutive_bad_steps"])


def _learning_rate(trainer: L.Trainer) -> float:
    groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
    # The configured value: a scheduler's warm-up or decay changes "lr", not "initial_lr".
    return float(groups[0].get("initial_lr", groups[0]["lr"])) if groups else float("nan")


def _names(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{', '.join(names[:3])}{more}"


def non_finite_state(module: torch.nn.Module, buffers: bool = True) -> str:
    """'' when every parameter (and floating buffer) of ``module`` is finite, else which not."""
    named = list(module.named_parameters())
    if buffers:
        named += [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]
    bad = [name for name, value in named if not bool(torch.isfinite(value).all())]
    return f"non-finite values in {_names(bad)}" if bad else ""


def _describe(losses: list[Tensor], pl_module: L.LightningModule, grads: bool) -> str:
    """What was not finite: the loss value, the first parameters with bad gradients, and
    the first buffers the forward pass left non-finite."""
    parts = [f"loss = {float(v.sum())}" for v in losses if not bool(torch.isfinite(v).all())][:1]
    if grads:
        names = [
            name
            for name, p in pl_module.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        if names:
            parts.append(f"non-finite gradients in {_names(names)}")
    buffers = [
        name
        for name, b in pl_module.named_buffers()
        if b.is_floating_point() and not bool(torch.isfinite(b).all())
    ]
    if buffers:
        parts.append(f"non-finite buffers in {_names(buffers)} (restored)")
    return "; ".join(parts) or "non-finite values on another rank"
