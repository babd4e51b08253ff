"""bench/gpu.py keeps working on the CPU: the benchmark prints every figure, --quick runs every check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "bench", "gpu", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_benchmark_prints_every_figure_on_the_cpu():
    proc = _run("--cases", "sd15-b1", "--steps", "1", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "versions: torch " in out and "cuda " in out and "cudnn " in out and "gpu " in out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("case "))
    columns = (
        "engine s/step",
        "samples/s",
        "bare s/step",
        "engine/bare",
        "peak alloc GiB",
        "estimate GiB",
        "vs reference",
    )
    assert all(column in lines[at] for column in columns)
    table = [line.split() for line in lines[at + 1 :] if line.startswith("sd15-b1")]
    assert {(" ".join(r[:2]) if r[1] == "+gc" else r[0]) for r in table} == {"sd15-b1", "sd15-b1 +gc"}
    for r in table:
        figures = r[2:] if r[1] == "+gc" else r[1:]
        engine, per_second, bare, ratio = map(float, figures[3:7])
        assert engine > 0 and bare > 0
        assert per_second == pytest.approx(1 / engine, rel=0.02)
        assert ratio == pytest.approx(engine / bare, rel=0.02)


def test_unknown_bench_is_a_usage_error():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "bench", "nope"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "loratui bench gpu" in proc.stderr


@pytest.mark.slow
def test_quick_runs_every_check_and_skips_cuda_paths_with_a_reason():
    proc = _run("--quick")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    names = ("fp32 step", "bf16 step", "fp16+GradScaler step", "checkpoint save/load", "WD14 tagger on CUDA")
    names += ("queue run (tiny, sample)",)
    lines = {name: next(x for x in proc.stdout.splitlines() if x.startswith(name + " ")) for name in names}
    assert "ok" in lines["fp32 step"]
    assert "skipped: needs CUDA" in lines["bf16 step"]
    assert "skipped: needs CUDA" in lines["fp16+GradScaler step"]
    assert "ok" in lines["checkpoint save/load"] and "max diff 0.0e+00" in lines["checkpoint save/load"]
    assert "skipped" in lines["WD14 tagger on CUDA"]
    assert "1 sample image(s)" in lines["queue run (tiny, sample)"]
