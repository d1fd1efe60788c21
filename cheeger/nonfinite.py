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

Each skip is counted, logged as a warning and as ``train/skipped_steps`` (running
total), and after ``max_consecutive_bad_steps`` bad steps in a row the run stops
with :class:`NonFiniteTrainingError`. Counts are part of the callback's state, so
they survive a resume. Under data parallelism the decision is reduced over ranks
(any rank bad -> all skip), so the replicas stay identical.

With a gradient scaler (``precision=16-mixed``), the scaler owns overflowing
gradients (it skips those steps and lowers its scale, which is expected early in
training), so only the loss is checked.
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

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, self._losses = self._losses, []
        params = [p for group in optimizer.param_groups for p in group["params"]]
        check_grads = getattr(trainer.precision_plugin, "scaler", None) is None
        grads = [p.grad for p in params if p.grad is not None] if check_grads else []
        # One host synchronisation for all the checks of the step.
        flags = [torch.isfinite(value).all() for value in (*losses, *grads)]
        bad = bool(flags) and not bool(torch.stack(flags).all())
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive_bad_steps = 0
            return
        what = _describe(losses, pl_module if check_grads else None)
        for p in params:
            p.grad = None
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
                f"loss or gradient (the last at global step {trainer.global_step}: {what}); "
                f"stopping because {CONFIG_KEY} = {self.max_consecutive_bad_steps}. Raise it "
                "to tolerate longer runs of bad steps."
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


def _describe(losses: list[Tensor], pl_module: L.LightningModule | None) -> str:
    """What was not finite: the loss value, and the first parameters with bad gradients."""
    parts = [f"loss = {float(v.sum())}" for v in losses if not bool(torch.isfinite(v).all())][:1]
    if pl_module is not None:
        names = [
            name
            for name, p in pl_module.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"non-finite gradients in {', '.join(names[:3])}{more}")
    return "; ".join(parts) or "non-finite values on another rank"
