"""NonFiniteGuard: a NaN/Inf step changes nothing, is counted, and too many in a row stop."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from cheeger.module import SegmentationModule
from cheeger.run.checkpoint import non_finite_entries, read_checkpoint
from cheeger.run.nonfinite import NonFiniteGuard, NonFiniteTrainingError
from cheeger.train import train
from tests.conftest import TINY, compose
from tests.faults import PoisonedBatch, PoisonedLoss

STEPS = 8  # 2 epochs of 4 batches


class StepRecorder(L.Callback):
    """Per optimizer step: did the parameters change, did the optimizer state change?"""

    def __init__(self) -> None:
        self.params_changed: list[bool] = []
        self.state_changed: list[bool] = []
        self.buffers_changed: list[bool] = []

    @staticmethod
    def _optimizer_state(trainer: L.Trainer) -> list[torch.Tensor]:
        state = trainer.optimizers[0].state
        return [torch.as_tensor(v).clone() for s in state.values() for v in s.values()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._params = [p.detach().clone() for p in pl_module.parameters()]
        self._state = self._optimizer_state(trainer)
        self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        params = list(pl_module.parameters())
        self.params_changed.append(
            any(not torch.equal(a, b) for a, b in zip(self._params, params, strict=True))
        )
        buffers = list(pl_module.buffers())
        self.buffers_changed.append(
            any(not torch.equal(a, b) for a, b in zip(self._buffers, buffers, strict=True))
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
    callbacks = [instantiate(cfg.callbacks.nonfinite), StepRecorder()]
    if how == "input":
        callbacks.append(PoisonedBatch(poison))
    else:
        module.loss_fn = PoisonedLoss(module.loss_fn, poison, how)
        module.loss_fn.parameter = module.head.classifier.weight
    guard, recorder = callbacks[:2]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=False, enable_checkpointing=False
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


def test_a_nan_batch_leaves_batchnorm_statistics_as_they_were(compose_train, caplog):
    trainer, module, datamodule, guard, recorder = fit_with_poison(compose_train, {2}, "input")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    with caplog.at_level(logging.WARNING, logger="cheeger"):
        trainer.fit(module, datamodule=datamodule)
    # The skipped step left every buffer (running mean/var, batch counts) as it was;
    # every other step moved them.
    assert recorder.buffers_changed == [i != 2 for i in range(STEPS)]
    assert recorder.params_changed == [i != 2 for i in range(STEPS)]
    assert all(torch.isfinite(b).all() for b in module.buffers() if b.is_floating_point())
    (message,) = [r.getMessage() for r in caplog.records if "skipped the optimizer" in r.message]
    assert "non-finite buffers in backbone." in message and "(restored)" in message
    # Evaluation after the bad batch still predicts from finite logits.
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        logits = module.eval()(batch["image"])[0]
    assert torch.isfinite(logits).all()


def test_parameters_overflowed_by_a_finite_update_stop_the_run_as_poisoned(compose_train):
    trainer, module, datamodule, guard, recorder = fit_with_poison(compose_train, set(), "loss")

    class Overflow(L.Callback):  # a finite gradient times a huge step: weights become inf
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.head.classifier.weight.mul_(float("inf"))

    trainer.callbacks.append(Overflow())
    with pytest.raises(NonFiniteTrainingError) as raised:
        trainer.fit(module, datamodule=datamodule)
    message = str(raised.value)
    assert "parameters are no longer finite at global step 3" in message
    assert "head.classifier.weight" in message and "lower optimizer.lr" in message
    assert "max_consecutive_bad_steps" not in message  # more patience would not help
    assert guard.skipped_steps == 0


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
    assert "model state is still finite" in message
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


def test_huge_learning_rate_stops_with_finite_checkpoints_only(tmp_path, caplog):
    """optimizer.lr=1e6: the forward overflows BatchNorm's running variance at every step.

    Before the guard restored buffers, last.ckpt and the best checkpoint held inf/NaN
    running statistics and the run went on; now no bad step changes the state, the run
    stops naming the learning rate, and every checkpoint on disk is finite.
    """
    cfg = compose("train", [*TINY, "optimizer.lr=1e6", "trainer.max_epochs=3"], tmp_path)
    with pytest.raises(NonFiniteTrainingError) as raised:
        train(cfg)
    assert "lower optimizer.lr (= 1e+06)" in str(raised.value)
    written = sorted(tmp_path.rglob("*.ckpt"))
    assert written  # epoch 0 ended before the run stopped
    for path in written:
        assert non_finite_entries(read_checkpoint(path)["state_dict"]) == [], path
