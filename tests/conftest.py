"""Shared fixtures: Hydra composition of the real configs, small and fast."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# Label histograms cached by the tests' runs stay out of the user's ~/.cache.
os.environ["CHEEGER_CACHE"] = tempfile.mkdtemp(prefix="cheeger-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Overrides that make any composed training config tiny enough for the test suite.
TINY = [
    "model=unet_tiny",
    "dataset.source.height=32",
    "dataset.source.width=64",
    "dataset.source.lengths={train: 16, val: 8, test: 8}",
    "dataset.train_transform.crop=[32,64]",
    "dataset.batch_size=4",
    "dataset.eval_batch_size=4",
    "dataset.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]

# Overrides of the overfit-one-batch tests: no logs or checkpoints, constant high LR.
OVERFIT = [
    "debug=overfit",
    "~logger",
    "callbacks.model_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "+trainer.enable_checkpointing=false",
    "optimizer.lr=0.01",
    "scheduler=constant",
]


def run_train_cli(*overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m cheeger.train *overrides`` in a subprocess from the repository root.

    ``timeout`` only guards against a hang: a shared 2-core machine can stretch a
    20-second CPU job over minutes.
    """
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "cheeger.train", *overrides]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def compose(config_name: str, overrides: list[str], output_dir: Path):
    """Compose a config as ``python -m cheeger.<task>`` would, with Hydra's runtime set."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(
            config_name=config_name,
            overrides=[*overrides, f"hydra.run.dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    # Outside a Hydra app there is no runtime dir: point the paths group at the test's.
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root_dir = str(ROOT)
        del cfg["hydra"]
    return cfg


def compose_with_hydra(overrides: list[str]):
    """The training config with its ``hydra`` node (sweeper, launcher, callbacks), unresolved.

    ``compose`` above drops that node; Hydra's compose loads plugin configs (optuna,
    submitit) but instantiates none of them.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)


def accelerators() -> list[str]:
    """The accelerators this machine has: cuda and/or mps (none on CI)."""
    import torch

    found = ["cuda"] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@pytest.fixture(params=["cpu", *accelerators()])
def device(request) -> str:
    """Each device a test should pass on: cpu always, cuda and mps when present
    (``make test-gpu`` runs only the accelerator cases)."""
    return request.param


@pytest.fixture(params=["cpu", *(name for name in accelerators() if name != "mps")])
def device64(request) -> str:
    """``device`` for float64 tests: MPS has no float64, so it is left out."""
    return request.param


@pytest.fixture
def compose_train(tmp_path):
    """compose_train(*overrides) -> a tiny training config writing under tmp_path."""

    def make(*overrides: str, tiny: bool = True):
        return compose("train", [*(TINY if tiny else []), *overrides], tmp_path / "run")

    return make


@pytest.fixture
def mini_cityscapes(tmp_path) -> Path:
    """A miniature Cityscapes download (tests/data/mini_cityscapes.py) under tmp_path."""
    from tests.data.mini_cityscapes import write_mini_cityscapes

    return write_mini_cityscapes(tmp_path / "cityscapes")


def save_checkpoint(module, path: Path) -> Path:
    """Save ``module`` the way cheeger.module.load_module reads checkpoints."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": module.state_dict(), "cheeger_model_config": module.model_config}, path
    )
    return path


@pytest.fixture
def tiny_module(compose_train):
    """An untrained unet_tiny + ConvHead module for the 19 Cityscapes classes (seeded).

    The 1x1 classifier is redrawn with a large standard deviation so that the
    untrained model predicts several classes instead of one.
    """
    import torch

    from cheeger.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule.from_config(compose_train())
    torch.nn.init.normal_(module.head.classifier.weight, std=3.0)
    return module.eval()


@pytest.fixture
def tiny_checkpoint(tiny_module, tmp_path) -> Path:
    """``tiny_module`` saved as a checkpoint file."""
    return save_checkpoint(tiny_module, tmp_path / "tiny.ckpt")


def run_tiny_sweep(sweep_dir: Path, *overrides: str) -> Path:
    """``python -m cheeger.train -m`` of a tiny config over seeds 0 and 1, logged to CSV, W&B
    (offline) and TensorBoard, one log row per step; returns the sweep directory."""
    tiny = [o for o in TINY if not o.startswith("dataset.source.lengths")]
    result = run_train_cli(
        "-m",
        *tiny,
        "dataset.source.lengths={train: 8, val: 4, test: 4}",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "logger=many",
        *overrides,
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="session")
def head_sweeps(tmp_path_factory) -> dict[str, Path]:
    """Two real multirun sweeps of two seeds each: the conv head, and head=spectral trained
    with loss=spectral (so that the noise energy is logged too)."""
    root = tmp_path_factory.mktemp("head_sweeps")
    return {
        "conv": run_tiny_sweep(root / "conv"),
        "spectral": run_tiny_sweep(root / "spectral", "head=spectral", "loss=spectral"),
    }
