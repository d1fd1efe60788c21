"""experiments/gpu_check.py (``make gpu-check``) in its CPU mode, as CI runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "experiments" / "gpu_check.py"
SECTIONS = [
    "device",
    "make test-gpu",
    "solver benchmark",
    "scaling benchmark",
    "bf16 training steps",
    "training against the CPU",
]


def run(*arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cpu_quick_runs_every_section_and_writes_the_report(tmp_path):
    out = tmp_path / "gpu_check.md"
    done = run("--device", "cpu", "--quick", "--out", str(out))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    text = out.read_text()
    assert "every section passed" in text
    outcomes = dict(re.findall(r"^\| ([A-Za-z0-9 -]+) \| (ok|failed|not run) \|", text, re.M))
    assert list(outcomes) == SECTIONS
    assert outcomes.pop("make test-gpu") == "not run"  # a CPU has nothing for it to run
    assert set(outcomes.values()) == {"ok"}
    # Each benchmark's own tables are in the report.
    for title in ("Forward, k = 16 smallest of L_sym", "Training step of the head",
                  "Training step at 64x128, batch 1, bf16 autocast",
                  "Two epochs of synthetic_city"):  # fmt: skip
        assert f"### {title}" in text, title
    losses = re.findall(r"^\| (conv|spectral) \| [^|]+ \| 1 \| [^|]+ \| ([0-9.]+) \|", text, re.M)
    assert [head for head, _ in losses] == ["conv", "spectral"]
    assert all(0 < float(loss) < 10 for _, loss in losses)
    # Same seed, same device: the two training runs of the comparison are one run here.
    assert "|Δ val/mIoU| = 0.0000 (tolerance 0.05)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_device_says_what_to_do(tmp_path):
    done = run("--device", "cuda", "--out", str(tmp_path / "x.md"), timeout=120)
    assert done.returncode != 0 and "--device cuda" in done.stderr
    assert "sees no CUDA device" in done.stderr
    if not torch.backends.mps.is_available():
        done = run("--out", str(tmp_path / "x.md"), timeout=120)
        assert done.returncode != 0 and "--device cpu --quick" in done.stderr
    assert not (tmp_path / "x.md").exists()
