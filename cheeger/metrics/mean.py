"""Weighted mean over a dataset, as summed states: the val/test loss of an epoch.

``WeightedMean`` keeps Σ w·x and Σ w, both summed across processes, so the mean
of a data-parallel run equals that of one process on the same samples whatever
the number of samples each process held. A NaN value makes the mean NaN (a loss
that went NaN must stay visible).

torchmetrics' ``MeanMetric`` would do, except that with ``nan_strategy="disable"``
(the one that keeps NaN) torchmetrics 1.9 replaces every weight by 1.

Example:
    >>> import torch
    >>> mean = WeightedMean()
    >>> mean.update(torch.tensor(2.0), 3)
    >>> mean.update(torch.tensor(4.0), 1)
    >>> float(mean.compute())
    2.5
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class WeightedMean(Metric):
    """Σ w x / Σ w of scalar values x with weights w (e.g. a batch loss and its image count).

    ``update(value, weight)``: value a scalar tensor (any float dtype, detached here),
    weight a number >= 0. ``compute()``: float32 scalar, NaN before any weight.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # float32 states: MPS has no float64.
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: float = 1.0) -> None:
        if value.numel() != 1:
            raise ValueError(f"value must be a scalar, found shape {tuple(value.shape)}")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, found {weight}")
        self.total += value.detach().reshape(()).to(self.total.dtype) * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return self.total / self.weight
