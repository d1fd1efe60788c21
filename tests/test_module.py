"""SegmentationModule pieces the end-to-end runs do not isolate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

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


@pytest.mark.parametrize("part", ["backbone", "head", "loss"])
def test_parts_outside_their_contract_are_refused(tiny_module, part):
    parts = {
        "backbone": tiny_module.backbone,
        "head": tiny_module.head,
        "loss": tiny_module.loss_fn,
    }
    parts[part] = torch.nn.Identity()
    key = {"backbone": "model", "head": "head", "loss": "loss"}[part]
    with pytest.raises(TypeError, match=rf"^{key} must build a cheeger\..*found Identity"):
        SegmentationModule(**parts, optimizer=torch.optim.SGD)


def test_the_backbone_declares_stride_and_input_multiple(compose_train):
    # The spectral head's graph is the feature map: 4 x 4 images at stride 2 give 4 nodes,
    # fewer than the k eigenpairs it asks for; at stride 1 there are 16.
    module = SegmentationModule.from_config(
        compose_train("head=spectral", "model.output_stride=2", "solver.k=6")
    )
    assert module.backbone.output_stride == 2
    assert module.input_multiple == 2**module.backbone.depth
    with pytest.raises(ValueError, match=r"^data.crop=\[4, 4\] with model.output_stride=2: "):
        module.check_input_size((4, 4), "data.crop")
    module.check_input_size((8, 8), "data.crop")
