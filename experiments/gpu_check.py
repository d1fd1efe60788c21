"""One prepared check of an accelerator: ``make gpu-check`` on a fresh GPU machine.

Sections, each timed and reported with its outcome:

1. the device: torch build, CUDA/cuDNN versions, device name and memory;
2. ``make test-gpu``: the tests parametrized by the ``device`` fixture, on the device;
3. the solver benchmark (``bench_partial_eigh.py --device <device>``, short preset):
   cheeger on the device against scipy's ARPACK on the host;
4. the scaling benchmark (``bench_scale.py --device <device>``, cases over 20 s skipped);
5. training steps of conv and spectral (U-Net + head + cross-entropy + backward +
   AdamW) at 512x1024, batch 2, under bf16 autocast (``trainer.precision=bf16-mixed``);
6. two short epochs of synthetic_city with head=spectral on the device and on the CPU
   from the same seed; val/mIoU must agree within ``MIOU_TOLERANCE`` (kernels on the
   device sum in a different order, so the two runs drift apart a little).

Writes experiments/results/gpu_check.md with every section's figures (``--out``
elsewhere) and exits non-zero when a section failed. ``--device cpu --quick`` runs
every section on tiny sizes, on the CPU, in under a minute: CI exercises the script
that way (``make test-gpu`` is not run on a CPU: it would only say there is no device).

    make gpu-check                                   # cuda (or mps) when present
    .venv/bin/python experiments/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_scale import build, measure, scene
from timing import Table, ms

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "gpu_check.md"
MIOU_TOLERANCE = 0.05  # absolute val/mIoU, device run against CPU run after 2 epochs
STEP_SIZE, QUICK_STEP_SIZE = (512, 1024), (64, 128)
STEP_BATCH, QUICK_STEP_BATCH = 2, 1

# Two short epochs of synthetic_city (full size), and the quick variant's tiny run.
TRAIN = [
    "head=spectral",
    "dataset.source.lengths={train: 64, val: 32, test: 32}",
    "dataset.allow_absent_classes=true",
    "trainer.max_epochs=2",
    "test=false",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]
QUICK_TRAIN = [
    "model=unet_tiny",
    "dataset.source.height=32",
    "dataset.source.width=64",
    "dataset.source.lengths={train: 8, val: 4, test: 4}",
    "dataset.train_transform.crop=[32,64]",
    "dataset.batch_size=4",
    "dataset.eval_batch_size=4",
]


class Check:
    """The report: one ``Table`` of sections, and the markdown each section adds."""

    def __init__(self) -> None:
        self.summary = Table("Sections", ["section", "outcome", "time", "detail"])
        self.details: list[str] = []
        self.failed: list[str] = []

    def section(self, name: str, run) -> None:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            outcome, detail, markdown = run()
        except Exception as error:  # a failed section is reported; the others still run
            outcome, detail, markdown = "failed", f"{type(error).__name__}: {error}", ""
        if outcome == "failed":
            self.failed.append(name)
        self.summary.add(name, outcome, ms(time.perf_counter() - start), detail)
        if markdown:
            self.details.append(f"## {name}\n\n{markdown.strip()}\n")


def device_section(device: str):
    lines = [f"torch {torch.__version__}, python {platform.python_version()}"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"{torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.1f} GiB, "
            f"compute capability {props.major}.{props.minor}, {torch.cuda.device_count()} "
            f"device(s); CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    elif device == "mps":
        lines.append(f"Apple MPS, {platform.platform()}")
    else:
        lines.append(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("\n".join(lines), flush=True)
    return "ok", lines[-1], "\n".join(f"- {line}" for line in lines)


def run_command(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"`{' '.join(command)}` exited with {done.returncode}:\n{tail}")
    return done


def test_gpu_section(device: str):
    if device == "cpu":
        return "not run", "cpu: make test-gpu needs CUDA or MPS", ""
    done = run_command(["make", "test-gpu"], timeout=300)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return "ok", last, f"`make test-gpu`: {last}"


def benchmark_section(script: str, arguments: list[str], out: Path):
    command = [sys.executable, str(HERE / script), *arguments, "--out", str(out)]
    run_command(command, timeout=400)
    text = out.read_text()
    body = text.split("\n", 2)[2] if text.startswith("#") else text  # drop its title
    return "ok", f"{script} {' '.join(arguments)}", body


def step_section(device: str, quick: bool):
    """Median seconds and peak memory of bf16-autocast training steps, conv vs spectral."""
    size = QUICK_STEP_SIZE if quick else STEP_SIZE
    batch = QUICK_STEP_BATCH if quick else STEP_BATCH
    repeats = 1 if quick else 3
    table = Table(
        f"Training step at {size[0]}x{size[1]}, batch {batch}, bf16 autocast",
        ["head", "time (median)", "runs", "peak memory", "loss", "spectral / conv"],
    )
    seconds = {}
    for head_name in ("conv", "spectral"):
        backbone, head, classes = build(head_name, 1)
        backbone, head = backbone.to(device).train(), head.to(device).train()
        parameters = [*backbone.parameters(), *head.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=1e-3)
        _, image, labels = scene(batch, size, 1, 1, classes, 0)
        image, labels = image.to(device), labels.to(device)

        def step(backbone=backbone, head=head, optimizer=optimizer, image=image, labels=labels):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                logits, _ = head(backbone(image), image)
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()
            return loss.detach()

        seconds[head_name], runs, peak, loss = measure(step, device, repeats)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"head={head_name}: bf16 training step loss is {loss}")
        ratio = "" if head_name == "conv" else f"{seconds[head_name] / seconds['conv']:.2f}"
        peak_text = "-" if peak is None else f"{peak / 2**30:.2f} GiB"
        table.add(head_name, ms(seconds[head_name]), runs, peak_text, f"{float(loss):.3f}", ratio)
    detail = f"spectral / conv = {seconds['spectral'] / seconds['conv']:.2f}"
    return "ok", detail, table.markdown()


def train_run(device: str, quick: bool, run_dir: Path) -> dict:
    overrides = [*TRAIN, *(QUICK_TRAIN if quick else []), f"trainer.accelerator={device}"]
    command = [sys.executable, "-m", "cheeger.train", *overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    run_command(command, timeout=600)
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def training_section(device: str, quick: bool, work: Path):
    runs = {name: train_run(name, quick, work / name) for name in dict.fromkeys([device, "cpu"])}
    table = Table(
        "Two epochs of synthetic_city, head=spectral, seed 0",
        ["run on", "val/mIoU", "val/boundary_iou", "wall time (incl. start-up)"],
    )
    for name, metrics in runs.items():
        table.add(
            name,
            f"{metrics['val/mIoU']:.4f}",
            f"{metrics['val/boundary_iou']:.4f}",
            ms(metrics["seconds"]),
        )
    difference = abs(runs[device]["val/mIoU"] - runs["cpu"]["val/mIoU"])
    verdict = "ok" if difference <= MIOU_TOLERANCE else "failed"
    detail = f"|Δ val/mIoU| = {difference:.4f} (tolerance {MIOU_TOLERANCE})"
    if device == "cpu":
        detail += "; one CPU run (the device is the CPU)"
    return verdict, detail, table.markdown() + f"\n{detail}\n"


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    raise SystemExit(
        f"gpu_check: no CUDA or MPS device here (torch {torch.__version__}). Install a CUDA "
        "build (docs/devices.md) or exercise the script with --device cpu --quick."
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI: under a minute)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cuda", "mps", "cpu"):
        parser.error(f"--device must be auto, cuda, mps or cpu, found {args.device!r}")
    args.device = resolve_device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: no MPS device here")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    check = Check()
    device, quick = args.device, args.quick
    solver = ["--device", device, "--quick"]
    solver += ["--sizes", "1024", "--repeats", "1", "--dense-n", "512", "--grid", "32", "64"] if (
        quick) else ["--sizes", "16384", "65536"]  # fmt: skip
    scale = ["--device", device, "--max-case-seconds", "20"]
    scale += ["--quick", "--heads", "conv", "spectral", "--strides", "1", "--repeats", "1"] if (
        quick) else []  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        work = Path(work)
        check.section("device", lambda: device_section(device))
        check.section("make test-gpu", lambda: test_gpu_section(device))
        check.section(
            "solver benchmark",
            lambda: benchmark_section("bench_partial_eigh.py", solver, work / "solver.md"),
        )
        check.section(
            "scaling benchmark",
            lambda: benchmark_section("bench_scale.py", scale, work / "scale.md"),
        )
        check.section("bf16 training steps", lambda: step_section(device, quick))
        check.section("training against the CPU", lambda: training_section(device, quick, work))
    command = " ".join(["python", *sys.argv]) if argv is None else f"main({argv!r})"
    header = (
        f"# GPU check\n\n{datetime.date.today()}, {platform.platform()}, device {device}. "
        f"Command: `{command}`. Total {time.perf_counter() - started:.0f} s"
        + (f"; failed: {', '.join(check.failed)}." if check.failed else "; every section passed.")
        + "\n"
    )
    text = "\n".join([header, check.summary.markdown(), *check.details])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
