"""A pipeline entry's progress before training: the queue shows its step ("collect 3/8") from the
`phase` events, not 0 %; `queue resume` of a pipeline entry that failed before training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from serve_harness import Serve, add_image, write_config

from engine import protocol
from engine.errors import LoratuiError
from engine.pipeline import RECORD, unfinished_step
from engine.runqueue import QueueStore
from engine.runqueue.display import fmt_progress
from engine.runqueue.store import resume_step


def test_queue_shows_the_collect_step_then_training_progress(tmp_path: Path):
    add_image(tmp_path)
    s = Serve(tmp_path, env={"FAKE_COLLECT": "4", "FAKE_TRAIN_STEP_S": "0.4"})
    try:
        s.wait_for(lambda e: e["type"] == "hello")
        run = s.send("enqueue", config=str(write_config(tmp_path, "pipe", steps=3)))["run"]
        seen: list[str] = []

        def collect_shown(event: dict) -> bool:
            if event["type"] != "queue":
                return False
            entry = next((e for e in event["entries"] if e["run"] == run), None)
            if entry is None:
                return False
            seen.append(fmt_progress(entry))
            return fmt_progress(entry) in ("collect 1/4", "collect 2/4", "collect 3/4")

        s.wait_for(collect_shown, 30)
        # the entry file says so too, for `loratui queue ls` run from another shell
        table = tomllib.loads((tmp_path / "queue" / f"{run}.toml").read_text())["queue"]
        assert table["phase"].startswith("collect ")
        assert s.finished(run)["status"] == "done"
        last = next(e for e in s.last_queue() if e["run"] == run)
        assert last["phase"] == "" and fmt_progress(last) == "100% 3/3"
    finally:
        s.stop()
    assert "collect" in seen  # the step shows at once, before its first count


def test_fmt_progress_shows_the_phase_only_while_running():
    entry = {"status": "running", "phase": "caption 5/9", "progress": 0.0, "step": 0, "total_steps": 10}
    assert fmt_progress(entry) == "caption 5/9"
    assert fmt_progress({**entry, "phase": ""}) == "0% 0/10"
    assert fmt_progress({**entry, "status": "failed"}) == "0% 0/10"  # a stale phase of an ended entry


def _failed_pipeline_entry(ws: Path, done: list[str] | None, pipeline: str = '["caption", "train"]'):
    """A queue entry whose pipeline run failed, with `done` recorded in pipeline.json (None: no record)."""
    add_image(ws)
    path = write_config(ws, "pipe")
    path.write_text(f"pipeline = {pipeline}\n" + path.read_text() + '[caption_auto]\ntagger = "wd14"\n')
    store = QueueStore(ws)
    entry = store.add_file(path)
    run_dir = ws / "runs" / "pipe"
    run_dir.mkdir(parents=True)
    if done is not None:
        (run_dir / RECORD).write_text(json.dumps({"done": done}))
    error = {"message": "the tagger failed", "hint": "", "where": "caption step"}
    store.update(entry.run, status=protocol.FAILED, run_dir=str(run_dir), error=error, phase="caption 2/9")
    return store, entry


@pytest.mark.parametrize("done", [None, []])
def test_failed_pipeline_entry_resumes_from_its_unfinished_step(tmp_path: Path, done):
    store, entry = _failed_pipeline_entry(tmp_path, done)
    assert resume_step(store.get(entry.run)) == "caption"
    again = store.requeue(entry.run)
    assert again.status == protocol.PENDING and again.resume and again.error is None


def test_failed_pipeline_entry_whose_training_failed_needs_its_state(tmp_path: Path):
    store, entry = _failed_pipeline_entry(tmp_path, ["caption"])
    assert resume_step(store.get(entry.run)) is None  # only training is left, and no state was saved
    with pytest.raises(LoratuiError, match="no saved training state"):
        store.requeue(entry.run)
    assert store.get(entry.run).status == protocol.FAILED  # nothing changed


def test_unfinished_step_of_a_collect_pipeline(tmp_path: Path):
    steps = ["collect", "caption", "train"]
    tmp_path.joinpath(RECORD).write_text(json.dumps({"done": ["collect"]}))
    assert unfinished_step(tmp_path, steps) == "caption"
    tmp_path.joinpath(RECORD).write_text(json.dumps({"done": []}))
    assert unfinished_step(tmp_path, steps) == "collect"
    tmp_path.joinpath(RECORD).write_text(json.dumps({"done": ["collect", "caption"]}))
    assert unfinished_step(tmp_path, steps) is None  # training left: its state decides
    assert unfinished_step(tmp_path / "missing", steps) is None
    assert unfinished_step(tmp_path, ["train"]) is None
