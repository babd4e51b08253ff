"""File faults, CI-sized: ENOSPC/EIO at every kind of write a run makes, damaged files on resume.

The injector and the checks are bench/faults_files.py's (which runs every case with both errors and
prints the figures); here each kind of write fails once with ENOSPC, one case resumes, and the logs
and a state folder are damaged before a resume.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import sys
from pathlib import Path

import pytest

from engine import protocol

_spec = importlib.util.spec_from_file_location(
    "bench_faults_files", Path(__file__).resolve().parent.parent / "bench" / "faults_files.py"
)
faults = importlib.util.module_from_spec(_spec)
sys.modules["bench_faults_files"] = faults  # dataclasses look their module up while the class is built
_spec.loader.exec_module(faults)


def test_events_after_a_torn_line_start_on_their_own_line(tmp_path):
    # A line torn by kill -9 in the middle of a write: the next event must not be glued to it.
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "hello"}\n{"type": "step", "st', encoding="utf-8")
    writer = protocol.EventWriter(io.StringIO(), jsonl_path=path)
    writer.emit({"type": "step", "step": 1})
    writer.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"type": "step", "st' and '"step":1' in lines[2]
    assert [e["type"] for e in protocol.read_jsonl(path)] == ["hello", "step"]


def test_a_full_disk_under_events_still_reports_on_the_stream(tmp_path):
    out = io.StringIO()
    writer = protocol.EventWriter(out, jsonl_path=tmp_path / "events.jsonl")
    writer.emit({"type": "hello"})
    with faults.inject("events", errno.ENOSPC, 1):
        writer.emit({"type": "step", "step": 1})
    writer.emit({"type": "run_finished", "status": "done"})
    writer.close()
    assert [protocol.decode(x)["type"] for x in out.getvalue().splitlines()] == [
        "hello",
        "step",
        "run_finished",
    ]
    assert writer.jsonl_error is not None and writer.jsonl_error.errno == errno.ENOSPC
    # whole lines only: the half-written step line was cut back
    assert [e["type"] for e in protocol.read_jsonl(tmp_path / "events.jsonl")] == ["hello", "run_finished"]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    from engine.demo import build_demo_dataset, build_tiny_sd15

    root = tmp_path_factory.mktemp("faults")
    return build_tiny_sd15(root / "model"), build_demo_dataset(root / "data")


@pytest.mark.slow
@pytest.mark.parametrize("kind", faults.WRITE_KINDS)
def test_enospc_at_each_kind_of_write(tmp_path, model_and_data, kind):
    model, data = model_and_data
    out = faults.run_write_fault(tmp_path, model, data, kind, errno.ENOSPC, None, resume=kind == "final")
    assert out.fired, "the fault never fired: the case tests nothing"
    if kind == "events":  # an event the file could not take still reached the stream; the run goes on
        assert out.status == "done", out.error
    else:
        assert out.status == "failed" and "disk is full" in out.error["message"], out.error
    assert not out.problems, out.problems
    if kind == "final":
        assert out.resumed == "done"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torn_logs", "truncated_state_adapter"])
def test_damaged_files_on_resume(tmp_path, model_and_data, kind):
    model, data = model_and_data
    out = faults.run_damage(tmp_path, model, data, kind, None)
    assert out.resumed == "done" and not out.problems, (out.status, out.error, out.problems)
