"""experiments/bench_scale.py and the timing helpers it uses: the fits against exact
power laws, the skip rule, the scenes, and the memory meter against a known allocation."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench_scale = importlib.import_module("bench_scale")
timing = importlib.import_module("timing")


def case(nodes, seconds, peak=None, batch=1):
    return bench_scale.Case("spectral", 1, (1, nodes), batch, nodes, seconds, 1, peak)


def test_time_exponent_recovers_a_power_law_and_ignores_small_cases():
    sizes = [2**12, 2**14, 2**16, 2**18, 2**20]
    cases = [case(n, 3e-6 * n**1.3) for n in sizes]
    cases[0].seconds *= 50  # fixed costs dominate below FIT_FROM: left out of the fit
    assert bench_scale.time_exponent(cases) == pytest.approx(1.3, abs=1e-9)
    assert bench_scale.time_exponent(cases[:2]) is None  # one point at or above FIT_FROM


def test_bytes_per_node_is_the_slope_over_batch_times_nodes():
    cases = [case(n, 1.0, peak=5e6 + 2500 * 8 * n, batch=8) for n in (1000, 4000, 9000)]
    slope, intercept = bench_scale.bytes_per_node(cases)
    assert slope == pytest.approx(2500, rel=1e-9) and intercept == pytest.approx(5e6, rel=1e-6)


def test_cases_predicted_over_a_budget_are_skipped():
    series = bench_scale.Series([case(2**16, 1.0, peak=2**30), case(2**18, 4.0, peak=2**32)])
    seconds, memory = series.predict(2**20)
    assert seconds == pytest.approx(16.0) and memory == pytest.approx(2**34)

    class Budget:
        max_case_seconds, memory_budget = 10.0, 2**40

    assert "predicted 16.0 s > --max-case-seconds 10" in bench_scale.skip_reason(
        series, 2**20, Budget
    )
    Budget.max_case_seconds, Budget.memory_budget = 100.0, 2**33
    assert "budget" in bench_scale.skip_reason(series, 2**20, Budget)
    Budget.memory_budget = 2**35
    assert bench_scale.skip_reason(series, 2**20, Budget) == ""


def test_scene_shapes_and_regions_agree_across_strides():
    features, image, labels = bench_scale.scene(2, (32, 48), 4, 5, 19, seed=0)
    assert features.shape == (2, 5, 8, 12) and image.shape == (2, 3, 32, 48)
    assert labels.shape == (2, 32, 48) and labels.dtype == torch.long
    assert int(labels.max()) < 19
    # Pixels of one region share one colour: as many colours as labels' regions at most.
    colours = image[0].flatten(1).T.unique(dim=0)
    assert 2 <= colours.shape[0] <= bench_scale.REGIONS


def test_graph_nodes_per_head():
    assert bench_scale.graph_nodes("spectral", (1024, 2048), 4) == 131_072
    assert bench_scale.graph_nodes("spectral_logits", (1024, 2048), 4) == 2_097_152


@pytest.mark.parametrize("long_run, runs", [(1e9, 3), (0.0, 1)])
def test_no_timed_run_is_the_memory_run(monkeypatch, long_run, runs):
    # The memory meter slows allocation down (fresh mmaps): its run is never the timing.
    inside = []

    class Meter:
        peak = 7

        def __init__(self, device):
            pass

        def __enter__(self):
            inside.append(True)
            return self

        def __exit__(self, *exc):
            inside.append(False)

    calls = []

    def run():
        calls.append(inside[-1])
        return len(calls)

    monkeypatch.setattr(bench_scale, "PeakMemory", Meter)
    monkeypatch.setattr(bench_scale, "LONG_RUN", long_run)
    seconds, timed_runs, peak, result = bench_scale.measure(run, "cpu", 3)
    assert (timed_runs, peak, result) == (runs, 7, 1 + runs)
    assert calls == [True] + [False] * runs and seconds >= 0


@pytest.mark.skipif(not timing.Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_meter_sees_a_known_allocation():
    size = 256 * 2**20
    with timing.PeakMemory("cpu") as small:
        torch.ones(1024)
    with timing.PeakMemory("cpu") as meter:
        block = torch.ones(size // 4)  # float32: `size` bytes, touched
        del block
    assert 0.99 * size <= meter.peak < size + 64 * 2**20
    assert small.peak < 16 * 2**20
    # Freed: a second meter does not start above the first one's allocation.
    with timing.PeakMemory("cpu") as again:
        block = torch.ones(size // 4)
        del block
    assert 0.99 * size <= again.peak < size + 64 * 2**20


def test_bench_scale_quick_writes_every_table(tmp_path):
    out = tmp_path / "scale.md"
    text = bench_scale.main(
        ["--quick", "--heads", "conv", "spectral", "--strides", "4", "--repeats", "1",
         "--out", str(out)]
    )  # fmt: skip
    assert out.read_text() == text
    for title in ("Training step of the head", "Fits per series", "Evaluation forward",
                  "Memory model: evaluation forward at 1024x2048"):  # fmt: skip
        assert f"### {title}" in text
    rows = [line for line in text.splitlines() if line.startswith("| spectral | 4 | 128x128")]
    assert len(rows) == 3  # batch 1 and 2, and the evaluation forward
    iterations = int(rows[0].rstrip(" |").rsplit("|", 1)[1])
    assert iterations >= 1  # the solver's iterations reach the table
    assert np.isfinite(float(rows[0].split("|")[8]))  # µs per node
