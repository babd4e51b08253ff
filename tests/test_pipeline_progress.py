"""A pipeline entry's progress before training: the queue shows its step ("collect 3/8") from the
`phase` events, not 0 %; `queue resume` of a pipeline entry that failed before training."""

from __future__ import annotations

import tomllib
from pathlib import Path

from serve_harness import Serve, add_image, write_config

from engine.runqueue.display import fmt_progress


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
