"""GPU memory fields of step events and the VRAM-spill warning."""

from __future__ import annotations

import torch

from engine.train.gpustats import SpillWatch, step_memory

GIB = 2**30


def test_no_memory_fields_on_the_cpu():
    assert step_memory(torch.device("cpu")) == {}


def test_spill_warning_needs_a_tenfold_slower_step_and_nearly_full_memory():
    full = {"max_memory_allocated": 76 * GIB, "max_memory_reserved": 79 * GIB, "memory_total": 80 * GIB}
    roomy = dict(full, max_memory_reserved=40 * GIB)
    watch = SpillWatch()
    for _ in range(6):
        assert watch.check(0.5, full) is None
    assert watch.check(4.0, full) is None  # 8x: not yet
    assert watch.check(6.0, roomy) is None  # 12x but memory has room: a slow disk, not a spill
    text = watch.check(6.0, full)
    assert text and "12x the usual 0.50s" in text and "79.0 of 80.0 GiB" in text
    assert watch.check(60.0, full) is None  # once per run


def test_no_spill_warning_without_memory_figures_or_history():
    watch = SpillWatch()
    assert watch.check(100.0, {"max_memory_reserved": 1, "memory_total": 1}) is None  # no history yet
    for _ in range(6):
        watch.check(0.1, {})
    assert watch.check(10.0, {}) is None


def test_run_view_state_keeps_ranks_and_memory_peaks():
    from tui.runstate import RunState

    state = RunState()
    state.apply({"type": "run_started", "run": "r", "name": "r", "total_steps": 10, "devices": 2})
    step = {"type": "step", "run": "r", "step": 1, "total_steps": 10, "loss": 0.5, "samples_per_second": 4.0}
    state.apply(step)
    assert state.devices == 2 and state.memory == {} and state.memory_text() == ""  # a CPU run
    state.apply(
        dict(
            step,
            step=2,
            max_memory_allocated=12 * GIB,
            max_memory_reserved=int(14.5 * GIB),
            memory_total=80 * GIB,
        )
    )
    assert state.memory_text() == "VRAM 12.0/14.5 of 80.0 GiB"
