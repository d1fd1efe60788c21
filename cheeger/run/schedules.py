"""Learning-rate schedules stepped once per optimizer step.

Each is a factory ``schedule(optimizer, total_steps, ...) -> LambdaLR``; the
config holds a Hydra partial and the module supplies ``total_steps`` from the
trainer (``estimated_stepping_batches``), so the schedule always ends at the
end of training whatever the epoch count or dataset size.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check(total_steps: int, warmup_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, found {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0, found {warmup_steps}")


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def poly_lr(
    optimizer: Optimizer, total_steps: int, power: float = 0.9, warmup_steps: int = 0
) -> LambdaLR:
    """lr_t = lr_0 * (1 - t / total_steps) ** power, after a linear warm-up."""
    _check(total_steps, warmup_steps)

    def factor(step: int) -> float:
        decay = max(0.0, 1.0 - step / total_steps) ** power
        return _warmup(step, warmup_steps) * decay

    return LambdaLR(optimizer, factor)


def cosine_lr(
    optimizer: Optimizer, total_steps: int, min_ratio: float = 0.01, warmup_steps: int = 0
) -> LambdaLR:
    """Cosine decay from lr_0 to ``min_ratio * lr_0`` over ``total_steps``, after warm-up."""
    _check(total_steps, warmup_steps)

    def factor(step: int) -> float:
        progress = min(1.0, step / total_steps)
        cosine = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return _warmup(step, warmup_steps) * cosine

    return LambdaLR(optimizer, factor)


def constant_lr(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Constant learning rate after an optional linear warm-up."""
    _check(total_steps, warmup_steps)
    return LambdaLR(optimizer, lambda step: _warmup(step, warmup_steps))
