"""SegmentationModule pieces the end-to-end runs do not isolate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cheeger.data.skipping import SKIPPED_KEY
from cheeger.module import SegmentationModule


@pytest.mark.parametrize("world_size", [1, 2])
def test_all_bad_training_batch(compose_train, world_size):
    module = SegmentationModule.from_config(compose_train())
    module._trainer = SimpleNamespace(world_size=world_size, sanity_checking=False, global_step=0)
    loss = module.training_step({SKIPPED_KEY: ["a bad sample"]}, 0)
    assert module._skipped["train"] == ["a bad sample"]
    if world_size == 1:
        assert loss is None  # Lightning skips the optimizer step
        return
    # Under DDP every rank must run backward (the gradient all-reduce waits for all of
    # them): a zero loss that gives every trainable parameter a zero gradient.
    assert loss.item() == 0.0
    loss.backward()
    params = [p for p in module.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and not p.grad.any() for p in params)
