"""Training-step time of the default U-Net in NCHW against channels-last (NHWC) layout.

One step = forward of ``UNet`` + 1x1 classifier, cross-entropy, backward, AdamW step, on
the default ``make train`` shapes (batch 8, 3x128x128 crops, base 16, depth 4, 19
classes). Both layouts start from the same weights and are checked to give the same
loss before they are timed; medians over repeats after one warm-up step. Writes
experiments/results/bench_unet_layout.md. Run from the repository root:

    .venv/bin/python experiments/bench_unet_layout.py            # 15 steps per layout
    .venv/bin/python experiments/bench_unet_layout.py --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import torch
from timing import median_seconds

from cheeger.models.unet import UNet

RESULTS = Path(__file__).resolve().parent / "results"


def make_step(channels_last: bool, state: dict, batch: tuple[torch.Tensor, torch.Tensor]):
    """A closure running one optimizer step of a fresh copy of the model."""
    torch.manual_seed(0)
    net = UNet(3, 16, 4, "batch", 1, 256, channels_last=channels_last)
    net.load_state_dict(state)
    head = torch.nn.Conv2d(net.out_channels, 19, 1)
    torch.nn.init.constant_(head.weight, 0.01)
    torch.nn.init.zeros_(head.bias)
    params = [*net.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    image, target = batch

    def step() -> float:
        loss = torch.nn.functional.cross_entropy(head(net(image)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = UNet(3, 16, 4, "batch", 1, 256).state_dict()
    batch = (torch.randn(8, 3, 128, 128), torch.randint(0, 19, (8, 128, 128)))
    first = {cl: make_step(cl, state, batch)() for cl in (False, True)}
    if abs(first[False] - first[True]) > 1e-4 * abs(first[False]):
        raise SystemExit(f"layouts disagree on the first loss: {first}")
    times = {cl: median_seconds(make_step(cl, state, batch), args.repeats) for cl in (False, True)}
    ratio = times[False] / times[True]
    lines = [
        "# bench_unet_layout",
        "",
        f"{datetime.date.today()}, {platform.platform()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}. Command: `python experiments/bench_unet_layout.py "
        f"--repeats {args.repeats}`. Median s per training step (batch 8, 3x128x128, "
        "U-Net base 16 depth 4, 1x1 head, CE, AdamW).",
        "",
        "| layout | s / step | speed-up |",
        "|---|---|---|",
        f"| NCHW (channels_last=false) | {times[False]:.3f} | 1.00 |",
        f"| NHWC (channels_last=true) | {times[True]:.3f} | {ratio:.2f} |",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_unet_layout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
