"""head=spectral end to end: every spectral group option trains, the head overfits a batch."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from cheeger.module import SegmentationModule
from cheeger.train import train
from tests.conftest import CONF, OVERFIT

SPECTRAL_GROUPS = ("affinity", "laplacian", "solver", "response")

# 16 x 32 crops: 512 feature-map nodes with unet_tiny (output stride 1).
SMALL = [
    "head=spectral",
    "dataset.source.height=16",
    "dataset.source.width=32",
    "dataset.train_transform.crop=[16,32]",
    "dataset.batch_size=2",
    "dataset.eval_batch_size=2",
    "k=4",
    "knn=4",
    "solver.num_landmarks=32",
    "loss.class_weights=null",
]


def spectral_options():
    for group in SPECTRAL_GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem


def small(*overrides: str) -> list[str]:
    # solver.num_landmarks only exists for solver=nystrom.
    nystrom = any(o == "solver=nystrom" for o in overrides)
    return [o for o in SMALL if nystrom or not o.startswith("solver.num_landmarks")] + list(
        overrides
    )


@pytest.mark.parametrize("group, option", list(spectral_options()))
def test_every_spectral_option_runs_fast_dev_run(group, option, compose_train):
    cfg = compose_train(*small(f"{group}={option}"), "debug=fast_dev_run")
    resolved = OmegaConf.to_container(cfg.head, resolve=True)
    assert resolved["solver"].get("k", 4) == 4  # eigenpair solvers read the k knob
    _, metrics = train(cfg)
    assert math.isfinite(metrics["train/loss_step"])
    assert 0.0 <= metrics["val/mIoU"] <= 1.0


def test_top_level_knobs_reach_the_groups(compose_train):
    cfg = compose_train(*small("affinity=gaussian", "k=6", "knn=5", "response=temper"))
    cfg.response.temper = 2.0
    module = SegmentationModule.from_config(cfg)
    assert module.head.solver.k == 6 and module.head.affinity.knn == 5
    assert module.head.response.temper == 2.0
    logits, aux = module(torch.zeros(1, 3, 16, 32))
    assert logits.shape == (1, 19, 16, 32) and aux["eigenvalues"].shape == (1, 6)


def test_impossible_combination_fails_before_training(compose_train):
    cfg = compose_train(*small("solver=chebyshev", "response=truncate"))
    # Hydra wraps the head's ValueError in an InstantiationException naming `head`.
    with pytest.raises(Exception, match="solver=chebyshev.*response=TruncateResponse") as info:
        train(cfg)
    assert "head" in str(info.value)


# The input-resolution modes with every solver they allow (dense is refused there; Nyström
# needs the symmetric Laplacian, the presets pick random_walk).
REFINE_RUNS = [
    (preset, solver)
    for preset in ("spectral_logits", "spectral_upsample")
    for solver in ("lanczos", "nystrom", "chebyshev")
]


@pytest.mark.parametrize("preset, solver", REFINE_RUNS)
def test_every_refinement_mode_and_solver_runs_fast_dev_run(preset, solver, compose_train):
    extra = ["laplacian=symmetric"] if solver == "nystrom" else []
    base = [o for o in small(f"head={preset}", f"solver={solver}", *extra) if "loss." not in o]
    cfg = compose_train(
        *base,
        "loss=ce_affinity",
        "loss.terms.ce.loss.class_weights=null",
        "debug=fast_dev_run",
    )
    _, metrics = train(cfg)
    assert math.isfinite(metrics["train/loss_step"])
    assert math.isfinite(metrics["train/loss/affinity_step"])
    assert 0.0 <= metrics["val/edge_auc"] <= 1.0


def test_refused_combinations_fail_at_start_naming_both_options(compose_train, tmp_path):
    cfg = compose_train(*small("head=spectral_logits", "solver=dense"), "debug=fast_dev_run")
    with pytest.raises(Exception, match="solver=dense.*head.mode=logits"):
        train(cfg)
    cfg = compose_train(*small("solver=dense", "solver.max_nodes=100"), "debug=fast_dev_run")
    message = "dataset.train_transform.crop=\\[16, 32\\] with model.output_stride=1: solver=dense"
    with pytest.raises(ValueError, match=message):
        train(cfg)
    cfg = compose_train(*small("k=600"), "debug=fast_dev_run")
    with pytest.raises(ValueError, match="crop.*solver=lanczos with k=600 .* found N = 512"):
        train(cfg)


def test_spectral_head_overfits_one_batch(compose_train, device):
    cfg = compose_train(
        *small(), *OVERFIT, "trainer.max_epochs=60", f"trainer.accelerator={device}"
    )
    _, metrics = train(cfg)
    assert metrics["train/pixel_acc"] > 0.9


def test_checkpoint_rebuilds_the_spectral_head(compose_train, tmp_path):
    cfg = compose_train(
        *small("response=learned"),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
    )
    train(cfg)
    from cheeger.module import load_module

    module = load_module(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert type(module.head).__name__ == "SpectralHead"
    assert type(module.head.response).__name__ == "LearnedResponse"


@pytest.mark.parametrize("mode", ["whole", "sliding"])
def test_eval_inference_with_a_loss_on_the_head_graph(mode, compose_train):
    from cheeger.models.inference import Inference

    cfg = compose_train(*(o for o in small() if not o.startswith("loss.")), "loss=spectral")
    module = SegmentationModule.from_config(cfg)
    module.inference = Inference(mode, window=(16, 16), stride=(8, 8))
    batch = {"image": torch.randn(2, 3, 16, 32), "mask": torch.randint(0, 19, (2, 16, 32))}
    loss, pred = module._step(batch, "val")
    assert pred.shape == (2, 16, 32)
    # Whole images keep the head's graph for the Rayleigh term; stitched windows cannot.
    assert (loss is not None) == (mode == "whole")
    assert module.stage_metrics("val").update_called
