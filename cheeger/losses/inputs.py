"""Checks on what a loss receives: the logits' class count and the head's auxiliaries.

Losses that read ``aux`` (the dict a head returns next to its logits) look their
entries up through ``aux_entry``, so a loss combined with a head that does not
provide what it needs stops with an error naming the term, the key and the head
that provides it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Which head provides each auxiliary a loss may read (``cheeger.models.heads``).
AUX_PROVIDERS = {
    "graph": "spectral",
    "laplacian": "spectral",
    "feature_logits": "spectral",
    "noise_energy": "spectral",
    "graph_size": "spectral",
}


def check_num_classes(logits: Tensor, num_classes: int) -> None:
    """ValueError unless ``logits`` is (B, num_classes, H, W)."""
    if logits.dim() != 4 or logits.shape[1] != num_classes:
        raise ValueError(
            f"logits must be (B, C, H, W) with C = num_classes={num_classes}, "
            f"found shape {tuple(logits.shape)}"
        )


def aux_entry(aux: dict[str, Any] | None, key: str, term: str) -> Any:
    """``aux[key]``, or a ValueError naming the loss term, the key and its provider."""
    if aux is None or key not in aux:
        provider = AUX_PROVIDERS.get(key, "spectral")
        found = sorted(aux) if aux else "none (head=conv provides none)"
        raise ValueError(
            f"loss term '{term}' needs aux['{key}'] from head={provider}; "
            f"the head's aux keys: {found}"
        )
    return aux[key]


def one_hot_target(
    target: Tensor, num_classes: int, ignore_index: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """One-hot labels (B, C, H, W) of ``dtype``, all zero at ignored pixels, and the
    valid-pixel mask (B, 1, H, W) bool, from ``target`` (B, H, W)."""
    target = target.long()
    valid = (target != ignore_index).unsqueeze(1)
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, 1, 1)
    return ((target.unsqueeze(1) == classes) & valid).to(dtype), valid
