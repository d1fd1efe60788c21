"""NonFiniteGuard: a NaN/Inf step changes nothing, is counted, and too many in a row stop."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from cheeger.module import SegmentationModule
from cheeger.nonfinite import NonFiniteGuard, NonFiniteTrainingError
from tests.faults import PoisonedLoss

STEPS = 8  # 2 epochs of 4 batches


class StepRecorder(L.Callback):
    """Per optimizer step: did the parameters change, did the optimizer state change?"""

    def __init__(self) -> None:
        self.params_changed: list[bool] = []
        self.state_changed: list[bool] = []

    @staticmethod
    def _optimizer_state(trainer: L.Trainer) -> list[torch.Tensor]:
        state = trainer.optimizers[0].state
        return [torch.as_tensor(v).clone() for s in state.values() for v in s.values()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._params = [p.detach().clone() for p in pl_module.parameters()]
        self._state = self._optimizer_state(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        params = list(pl_module.parameters())
        self.params_changed.append(
            any(not torch.equal(a, b) for a, b in zip(self._params, params, strict=True))
        )
        state = self._optimizer_state(trainer)
        self.state_changed.append(
            len(state) != len(self._state)
            or any(not torch.equal(a, b) for a, b in zip(self._state, state, strict=True))
        )


def fit_with_poison(compose_train, poison: set[int], how: str = "loss", *overrides: str):
    """Train 2 tiny epochs with the loss poisoned on the given training steps."""
    cfg = compose_train(
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "loss.class_weights=null",
        "scheduler=constant",
        *overrides,
    )
    module = SegmentationModule.from_config(cfg)
    module.loss_fn = PoisonedLoss(module.loss_fn, poison, how)
    module.loss_fn.parameter = module.head.classifier.weight
    guard, recorder = instantiate(cfg.callbacks.nonfinite), StepRecorder()
    trainer = instantiate(
        cfg.trainer, callbacks=[guard, recorder], logger=False, enable_checkpointing=False
    )
    datamodule = instantiate(cfg.dataset, seed=0)
    return trainer, module, datamodule, guard, recorder


@pytest.mark.parametrize("how", ["loss", "grad"])
def test_bad_step_changes_nothing_and_training_goes_on(compose_train, caplog, how):
    trainer, module, datamodule, guard, recorder = fit_with_poison(compose_train, {2}, how)
    with caplog.at_level(logging.WARNING, logger="cheeger"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == STEPS  # the skipped step still counts as a step
    # Step 2 left parameters and AdamW state (moments, step count) exactly as they were;
    # every other step moved both (AdamW's weight decay alone would move the parameters).
    assert recorder.params_changed == [i != 2 for i in range(STEPS)]
    assert recorder.state_changed == [i != 2 for i in range(STEPS)]
    assert guard.skipped_steps == 1 and guard.consecutive_bad_steps == 0
    assert trainer.callback_metrics["train/skipped_steps"] == 1.0
    assert all(torch.isfinite(p).all() for p in module.parameters())
    (message,) = [r.getMessage() for r in caplog.records if "skipped the optimizer" in r.message]
    assert "global step 2" in message
    expected = "loss = nan" if how == "loss" else "non-finite gradients in head.classifier.weight"
    assert expected in message


def test_too_many_bad_steps_in_a_row_stop_naming_the_config_key(compose_train):
    trainer, module, datamodule, guard, recorder = fit_with_poison(
        compose_train, {1, 2, 3}, "loss", "callbacks.nonfinite.max_consecutive_bad_steps=3"
    )
    assert guard.max_consecutive_bad_steps == 3
    with pytest.raises(NonFiniteTrainingError) as raised:
        trainer.fit(module, datamodule=datamodule)
    message = str(raised.value)
    assert "3 consecutive optimizer steps" in message and "global step 3" in message
    assert "callbacks.nonfinite.max_consecutive_bad_steps = 3" in message
    assert recorder.params_changed == [True, False, False]  # stopped inside the third
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_bad_steps_apart_are_tolerated(compose_train):
    trainer, module, datamodule, guard, recorder = fit_with_poison(
        compose_train, {1, 2, 4, 5}, "loss", "callbacks.nonfinite.max_consecutive_bad_steps=3"
    )
    trainer.fit(module, datamodule=datamodule)
    assert guard.skipped_steps == 4 and trainer.global_step == STEPS
    assert recorder.params_changed == [i not in {1, 2, 4, 5} for i in range(STEPS)]


def test_counts_are_checkpoint_state_and_bad_setting_is_named():
    guard = NonFiniteGuard(4)
    guard.skipped_steps, guard.consecutive_bad_steps = 7, 2
    restored = NonFiniteGuard(4)
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped_steps, restored.consecutive_bad_steps) == (7, 2)
    with pytest.raises(ValueError, match="callbacks.nonfinite.max_consecutive_bad_steps"):
        NonFiniteGuard(0)
