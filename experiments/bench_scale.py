"""How the heads' cost grows with the number of graph nodes, up to Cityscapes frames.

Heads, built from the real configs (``conf/``) at their defaults:

* ``conv``: ``head=conv``, the 1x1 convolution;
* ``spectral``: ``head=spectral`` (embedding mode: bilateral 3x3 window graph of the
  feature map, symmetric Laplacian, ``partial_eigh`` k = 16, temper response);
* ``spectral_logits``: ``head=spectral_logits``, the image-guided mode (3x3 window
  graph of the input image at input resolution, random-walk Laplacian, order-8
  Chebyshev heat filter, no eigensolver).

each at ``model.output_stride`` 1 and 4, on images from 128x128 to 1024x2048 (the
embedding head's graph has H W / stride^2 nodes; the image-guided head's has H W),
batch 1 and 8. The scenes are 24 Voronoi regions per image: feature maps with a
random mean per region plus unit noise (C = the U-Net's output channels), images of
one colour per region, labels the region's class.

Two measurements:

* training step of the head: features (requiring grad) -> head -> cross-entropy ->
  backward; time (median of 3 runs after a warm-up; one run when the warm-up took
  over 10 s) and peak memory over the warm-up (CPU: peak resident set of the
  process above its start, Linux /proc; CUDA: peak allocated tensors above the start);
* evaluation forward of the whole model (U-Net + head, no grad, batch 1), whose peak
  memory is fitted linearly in N and extrapolated to 1024x2048 (the memory model),
  then measured there when it fits.

A case is skipped, and said to be, when the previous size predicts it to run over
``--max-case-seconds`` or over the memory budget. Fits per series: the time exponent
(least-squares slope of log time on log N, sizes with N >= 16,384) and bytes per node
(slope of peak memory on batch x N).

Writes experiments/results/bench_scale.md (``--out`` elsewhere). From the repository root:

    .venv/bin/python experiments/bench_scale.py                  # CPU, every size that fits
    .venv/bin/python experiments/bench_scale.py --device cuda --max-case-seconds 20
    .venv/bin/python experiments/bench_scale.py --quick          # two small sizes (seconds)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from timing import PeakMemory, Table, ms, timed
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "bench_scale.md"
HEADS = {
    "conv": ["head=conv"],
    "spectral": ["head=spectral"],
    "spectral_logits": ["head=spectral_logits"],
}
SIZES = [(128, 128), (256, 256), (256, 512), (512, 1024), (1024, 2048)]
QUICK_SIZES = [(64, 64), (128, 128)]
STRIDES = (1, 4)
BATCHES = (1, 8)
QUICK_BATCHES = (1, 2)
REGIONS = 24
T4_BYTES = 16 * 2**30
LONG_RUN = 10.0  # seconds: after a warm-up longer than this, one timed run
FIT_FROM = 16_384  # nodes: smaller cases are dominated by fixed costs


def build(head: str, stride: int) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """(backbone, head, num_classes) of ``python -m cheeger.train <head overrides>``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*HEADS[head], f"model.output_stride={stride}"])
    backbone = instantiate(cfg.model)
    classes = int(cfg.dataset.num_classes)
    module = instantiate(cfg.head, in_channels=backbone.out_channels, num_classes=classes)
    return backbone, module, classes


def scene(batch, size, stride, channels, classes, seed):
    """Features (B, C, H/s, W/s), image (B, 3, H, W) and labels (B, H, W) of Voronoi regions."""
    height, width = size
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    regions = []
    for _ in range(batch):
        sites = torch.rand(REGIONS, 2, generator=g) * torch.tensor([height, width])
        distance = (yy[..., None] - sites[:, 0]) ** 2 + (xx[..., None] - sites[:, 1]) ** 2
        regions.append(distance.argmin(-1))
        del distance
    region = torch.stack(regions)  # (B, H, W)
    centres = 2.0 * torch.randn(batch, REGIONS, channels, generator=g)
    coarse = region[:, ::stride, ::stride]
    features = torch.stack([centres[b][coarse[b]] for b in range(batch)]).permute(0, 3, 1, 2)
    features = features + torch.randn(features.shape, generator=g)
    colours = torch.rand(batch, REGIONS, 3, generator=g)
    image = torch.stack([colours[b][region[b]] for b in range(batch)]).permute(0, 3, 1, 2)
    labels = (region % classes).long()
    return features.contiguous(), image.contiguous(), labels


@dataclass
class Case:
    head: str
    stride: int
    size: tuple[int, int]
    batch: int
    nodes: int  # graph nodes per image (feature-map pixels for conv)
    seconds: float | None = None
    runs: int = 0
    peak: int | None = None
    iterations: int | None = None
    skipped: str = ""

    @property
    def total_nodes(self) -> int:
        return self.batch * self.nodes


@dataclass
class Series:
    cases: list[Case] = field(default_factory=list)

    def measured(self) -> list[Case]:
        return [c for c in self.cases if c.seconds is not None]

    def predict(self, nodes: int) -> tuple[float, float]:
        """(seconds, bytes) at ``nodes`` from the last measured case: time at the fitted
        exponent (at least 1), memory linear."""
        done = self.measured()
        if not done:
            return 0.0, 0.0
        last = done[-1]
        exponent = max(1.0, time_exponent(done) or 1.0)
        ratio = nodes / last.total_nodes
        return last.seconds * ratio**exponent, (last.peak or 0) * ratio


def time_exponent(cases: list[Case]) -> float | None:
    """Least-squares slope of log seconds on log nodes (cases with N >= FIT_FROM)."""
    points = [(c.total_nodes, c.seconds) for c in cases if c.seconds and c.nodes >= FIT_FROM]
    if len(points) < 2:
        return None
    x, y = (np.log([p[i] for p in points]) for i in (0, 1))
    return float(np.polyfit(x, y, 1)[0])


def bytes_per_node(cases: list[Case]) -> tuple[float, float] | None:
    """(slope, intercept) of peak bytes on batch x nodes, least squares."""
    points = [(c.total_nodes, c.peak) for c in cases if c.peak is not None]
    if len(points) < 2:
        return None
    slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
    return float(slope), float(intercept)


def graph_nodes(head: str, size, stride: int) -> int:
    pixels = size[0] * size[1]
    return pixels if head == "spectral_logits" else pixels // stride**2


def measure(run, device: str, repeats: int) -> tuple[float, int, int | None, object]:
    """(median seconds, timed runs, peak bytes of the first run, last result).

    The first run is the warm-up and the memory measurement, and is never timed: on the
    CPU, ``PeakMemory`` has glibc map every allocation from 128 KiB on afresh, so that
    run pays a page fault per large tensor (a spectral step at 65k nodes ran 2.3x
    slower). ``repeats`` runs are timed after it, one when it took over ``LONG_RUN``.
    """
    with PeakMemory(device) as memory:
        first, _ = timed(run, 1, warmup=False, device=device)
    runs = 1 if first > LONG_RUN else repeats
    seconds, result = timed(run, runs, warmup=False, device=device)
    return seconds, runs, memory.peak, result


def skip_reason(series: Series, nodes: int, args) -> str:
    seconds, memory = series.predict(nodes)
    if seconds > args.max_case_seconds:
        return f"skipped: predicted {ms(seconds)} > --max-case-seconds {args.max_case_seconds:g}"
    if memory > args.memory_budget:
        return f"skipped: predicted {gib(memory)} > budget {gib(args.memory_budget)}"
    return ""


def training_steps(args, models, progress) -> dict[tuple, Series]:
    out: dict[tuple, Series] = {}
    for (head_name, stride), (backbone, head, classes) in models.items():
        head.train()
        for batch in args.batches:
            series = out.setdefault((head_name, stride, batch), Series())
            for size in args.sizes:
                nodes = graph_nodes(head_name, size, stride)
                case = Case(head_name, stride, size, batch, nodes)
                series.cases.append(case)
                progress.update()
                case.skipped = skip_reason(series, batch * nodes, args)
                if case.skipped:
                    continue
                features, image, labels = (
                    t.to(args.device)
                    for t in scene(batch, size, stride, backbone.out_channels, classes, 0)
                )

                def step(head=head, features=features, image=image, labels=labels):
                    head.zero_grad(set_to_none=True)
                    x = features.detach().requires_grad_()
                    logits, aux = head(x, image)
                    F.cross_entropy(logits.float(), labels).backward()
                    return getattr(aux.get("spectral_info"), "iterations", None)

                case.seconds, case.runs, case.peak, case.iterations = measure(
                    step, args.device, args.repeats
                )
                head.zero_grad(set_to_none=True)
                del features, image, labels
                label = f"{head_name} s{stride} b{batch} {size_label(size)}"
                tqdm.write(f"{label}: {ms(case.seconds)}, peak {gib(case.peak)}")
    return out


def evaluation_forwards(args, models, progress) -> dict[tuple, Series]:
    out: dict[tuple, Series] = {}
    for (head_name, stride), (backbone, head, classes) in models.items():
        backbone.eval(), head.eval()
        series = out.setdefault((head_name, stride), Series())
        for size in args.sizes:
            case = Case(head_name, stride, size, 1, graph_nodes(head_name, size, stride))
            series.cases.append(case)
            progress.update()
            case.skipped = skip_reason(series, case.nodes, args)
            if case.skipped:
                continue
            _, image, _ = scene(1, size, stride, 1, classes, 1)
            image = image.to(args.device)

            @torch.no_grad()
            def forward(backbone=backbone, head=head, image=image):
                return head(backbone(image), image)[0].shape

            case.seconds, case.runs, case.peak, _ = measure(forward, args.device, args.repeats)
            del image
            label = f"eval {head_name} s{stride} {size_label(size)}"
            tqdm.write(f"{label}: {ms(case.seconds)}, peak {gib(case.peak)}")
    return out


def gib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**30:.2f} GiB" if value >= 2**28 else f"{value / 2**20:.0f} MiB"


def per_node(case: Case) -> str:
    if case.peak is None:
        return "-"
    return f"{case.peak / case.total_nodes:,.0f}"


def size_label(size) -> str:
    return f"{size[0]}x{size[1]}"


def step_table(steps: dict[tuple, Series]) -> Table:
    table = Table(
        "Training step of the head (features -> head -> cross-entropy -> backward)",
        [
            "head", "stride", "image", "graph nodes N", "batch", "time (median)", "runs",
            "µs per node", "peak memory", "bytes per node", "solver iterations",
        ],
    )  # fmt: skip
    for series in steps.values():
        for c in series.cases:
            if c.skipped:
                table.add(c.head, c.stride, size_label(c.size), f"{c.nodes:,}", c.batch, c.skipped,
                          "", "", "", "", "")  # fmt: skip
                continue
            table.add(
                c.head, c.stride, size_label(c.size), f"{c.nodes:,}", c.batch, ms(c.seconds),
                c.runs, f"{1e6 * c.seconds / c.total_nodes:.2f}", gib(c.peak), per_node(c),
                "-" if c.iterations is None else c.iterations,
            )  # fmt: skip
    return table


def fit_table(steps: dict[tuple, Series], target: float) -> Table:
    table = Table(
        "Fits per series (training step)",
        ["head", "stride", "batch", "nodes fitted", "time exponent", f"<= {target}?",
         "bytes per node (slope)", "intercept"],
    )  # fmt: skip
    for (head, stride, batch), series in steps.items():
        done = series.measured()
        exponent = time_exponent(done)
        memory = bytes_per_node(done)
        fitted = [c.nodes for c in done if c.nodes >= FIT_FROM]
        span = f"{min(fitted):,} - {max(fitted):,}" if len(fitted) >= 2 else "-"
        table.add(
            head, stride, batch, span,
            "-" if exponent is None else f"{exponent:.2f}",
            "-" if exponent is None else ("yes" if exponent <= target else "no"),
            "-" if memory is None else f"{memory[0]:,.0f}",
            "-" if memory is None else gib(max(memory[1], 0.0)),
        )  # fmt: skip
    return table


def eval_tables(forwards: dict[tuple, Series], target_size) -> tuple[Table, Table]:
    rows = Table(
        "Evaluation forward (U-Net + head, no grad, batch 1)",
        ["head", "stride", "image", "graph nodes N", "time (median)", "runs", "peak memory",
         "bytes per node"],
    )  # fmt: skip
    model = Table(
        f"Memory model: evaluation forward at {size_label(target_size)}",
        ["head", "stride", "bytes per node (fit)", f"predicted at {size_label(target_size)}",
         "measured there", "under 16 GiB (T4)?"],
    )  # fmt: skip
    for (head, stride), series in forwards.items():
        for c in series.cases:
            if c.skipped:
                rows.add(head, stride, size_label(c.size), f"{c.nodes:,}", c.skipped, "", "", "")
            else:
                rows.add(head, stride, size_label(c.size), f"{c.nodes:,}", ms(c.seconds), c.runs,
                         gib(c.peak), per_node(c))  # fmt: skip
        fit = bytes_per_node([c for c in series.measured() if c.size != target_size])
        nodes = graph_nodes(head, target_size, stride)
        predicted = None if fit is None else fit[0] * nodes + max(fit[1], 0.0)
        there = next((c for c in series.measured() if c.size == target_size), None)
        known = [v for v in (predicted, there.peak if there else None) if v is not None]
        model.add(
            head, stride, "-" if fit is None else f"{fit[0]:,.0f}", gib(predicted),
            gib(there.peak) if there else "not run",
            "-" if not known else ("yes" if max(known) < T4_BYTES else "no"),
        )  # fmt: skip
    return rows, model


def memory_budget(device: str) -> float:
    """Bytes a case may predict to use: 90% of a GPU's memory, 60% of available RAM."""
    if device == "cuda":
        return 0.9 * torch.cuda.get_device_properties(0).total_memory
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return 0.6 * int(line.split()[1]) * 1024
    return 8 * 2**30


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps (default cpu)")
    parser.add_argument(
        "--quick", action="store_true", help="sizes 64x64 and 128x128, batch 1 and 2"
    )
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--strides", nargs="+", type=int, default=list(STRIDES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument(
        "--max-case-seconds",
        type=float,
        default=120.0,
        help="skip a case the previous size predicts to take longer",
    )
    parser.add_argument(
        "--memory-gib",
        type=float,
        default=None,
        help="memory budget per case (default: 90%% of the GPU, 60%% of free RAM)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "cuda", "mps"):
        parser.error(f"--device must be cpu, cuda or mps, found {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: no MPS device here")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, found {args.repeats}")
    args.sizes = QUICK_SIZES if args.quick else SIZES
    args.batches = QUICK_BATCHES if args.quick else BATCHES
    args.memory_budget = (
        memory_budget(args.device) if args.memory_gib is None else args.memory_gib * 2**30
    )
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    models = {
        (head, stride): tuple(
            m.to(args.device) if isinstance(m, torch.nn.Module) else m for m in build(head, stride)
        )
        for head in args.heads
        for stride in args.strides
    }
    total = len(models) * len(args.sizes) * (len(args.batches) + 1)
    with tqdm(total=total, desc="bench_scale", disable=None) as progress:
        steps = training_steps(args, models, progress)
        forwards = evaluation_forwards(args, models, progress)
    rows, model = eval_tables(forwards, SIZES[-1])
    device_name = (
        torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    )
    command = " ".join(["python", *sys.argv]) if argv is None else "main(" + repr(argv) + ")"
    header = [
        "# Scaling benchmark: heads from 128x128 to 1024x2048",
        "",
        f"{datetime.date.today()}, {platform.platform()}, device {args.device} ({device_name}), "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; torch "
        f"{torch.__version__}. Command: `{command}`. Load average {load_before:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end; total "
        f"{time.perf_counter() - started:.0f} s. Memory budget per case "
        f"{gib(args.memory_budget)}, time budget {args.max_case_seconds:g} s "
        "(cases predicted over either are skipped).",
        "",
        "Heads at their defaults (conf/head): conv = 1x1 convolution; spectral = embedding "
        "mode, 3x3 bilateral window graph of the feature map, L_sym, partial_eigh k = 16, "
        "temper response; spectral_logits = the image-guided mode, 3x3 window graph of the "
        "image at input resolution, random-walk Laplacian, order-8 Chebyshev heat filter. "
        "Graph nodes N: feature-map pixels H W / stride² (input pixels for spectral_logits). "
        "Peak memory: " + (
            "peak allocated CUDA tensors above the start."
            if args.device == "cuda"
            else "peak resident set of the process above its start (Linux VmHWM)."
        ),
        "",
    ]  # fmt: skip
    tables = [step_table(steps), fit_table(steps, 1.1), rows, model]
    text = "\n".join(header) + "\n" + "\n".join(t.markdown() for t in tables)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
