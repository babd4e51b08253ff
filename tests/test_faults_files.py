"""File faults, CI-sized: ENOSPC/EIO at every kind of write a run makes, damaged files on resume.

The injector and the checks are bench/faults.py's (which runs every case with both errors and
prints the figures); here each kind of write fails once with ENOSPC, one case resumes, and the logs
and a state folder are damaged before a resume.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from engine import protocol
from engine.errors import LoratuiError
from engine.oserrors import disk_error

_spec = importlib.util.spec_from_file_location(
    "bench_faults", Path(__file__).resolve().parent.parent / "bench" / "faults.py"
)
faults = importlib.util.module_from_spec(_spec)
sys.modules["bench_faults"] = faults  # dataclasses look their module up while the class is built
_spec.loader.exec_module(faults)


def test_disk_errors_are_named_with_a_hint(tmp_path):
    err = disk_error(
        OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.safetensors")), tmp_path
    )
    assert isinstance(err, LoratuiError) and "disk is full" in err.message and "x.safetensors" in err.message
    assert "resume" in err.hint and "df -h" in err.hint
    assert "read-only" in disk_error(OSError(errno.EROFS, "Read-only file system"), tmp_path).message
    assert disk_error(OSError(errno.ENOENT, "No such file"), tmp_path) is None
    assert disk_error(ValueError("x"), tmp_path) is None


def test_events_after_a_torn_line_start_on_their_own_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "hello"}\n{"type": "step", "st', encoding="utf-8")
    writer = protocol.EventWriter(None, jsonl_path=path)
    writer.emit({"type": "step", "step": 1})
    writer.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"type": "step", "st' and '"step":1' in lines[2]
    assert [e["type"] for e in protocol.read_jsonl(path)] == ["hello", "step"]


def test_a_full_disk_under_events_still_reports_on_the_stream(tmp_path):
    import io

    out = io.StringIO()
    writer = protocol.EventWriter(out, jsonl_path=tmp_path / "events.jsonl")
    with faults.inject("events", errno.ENOSPC, 1):
        writer.set_jsonl(tmp_path / "events.jsonl")
        with pytest.raises(OSError):
            writer.emit({"type": "step", "step": 1})
    writer.emit({"type": "run_finished", "status": "failed"})  # the file is dropped, the stream goes on
    assert [protocol.decode(x)["type"] for x in out.getvalue().splitlines()] == ["step", "run_finished"]
    assert os.path.getsize(tmp_path / "events.jsonl") > 0  # half a line: what a full disk leaves


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
