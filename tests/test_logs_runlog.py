"""Loss log reading, run summaries, config diff and smoothing (no Textual)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from logs_util import age, make_run

from engine.errors import LoratuiError
from engine.runs import csvbody, smoothing
from engine.runs.configdiff import config_diff, run_config
from engine.runs.losslog import read_loss_csv
from engine.runs.summary import discover_runs, summarize_run
from tui.logs_cli import main as logs_main


def test_engine_format_run_summary(tmp_path):
    run = make_run(tmp_path, "alpha", steps=200, seed=1, lr=3e-4, val_every=50)
    log = read_loss_csv(run / "loss.csv")
    assert len(log) == 201 and log.step[0] == 0 and log.step[-1] == 200
    assert math.isnan(log.loss[0])  # step-0 validation row: empty loss, kept
    vs, vv = log.val_points()
    assert vs.tolist() == [0, 50, 100, 150, 200]
    s = summarize_run(run)
    assert s.name == "alpha" and s.status == "done" and s.steps == 200
    assert s.base_model == "demo/models/tiny-sd15"
    assert s.best_val == pytest.approx(float(vv.min())) and s.final_val == pytest.approx(float(vv[-1]))
    assert s.duration == pytest.approx(100.0)
    assert s.final_loss == pytest.approx(float(open(run / "loss.csv").read().splitlines()[-1].split(",")[3]))
    assert s.date is not None and not s.error


def test_status_running_vs_interrupted(tmp_path):
    # The one rule (engine/runqueue/liveness.py): an open record whose writer (the pid in its
    # run_started, here this test's process) is alive and existed when the run started is running.
    fresh = make_run(tmp_path, "fresh", status=None, start_time=time.time())
    age(fresh, 3600)  # quiet for an hour (a slow model load): the age of files says nothing
    # Started an hour ago "by" this process, which is younger than that: a reused pid, so the
    # trainer that wrote it is gone.
    old = make_run(tmp_path, "old", status=None)
    failed = make_run(tmp_path, "bad", status="failed")
    assert summarize_run(fresh).status == "running"
    assert summarize_run(old).status == "interrupted"
    assert summarize_run(failed).status == "failed"
    assert [p.name for p in discover_runs(tmp_path)] == ["bad", "fresh", "old"]


def test_damaged_rows_skipped_and_counted(tmp_path):
    p = tmp_path / "loss.csv"
    p.write_text(
        "step,epoch,loss,loss_ema,lr,val_loss,seconds\n"
        "1,0,0.5,0.5,1e-4,,1\n"
        "NOT A ROW\n"
        "2,0,0.4,0.45,1e-4,0.3,2\n"
        "3,x,0.3,0.4,1e-4,,3\n"
        "4,0,0.2,0.3,1e-4,,4,99\n"
        "5,0,0.1,0.2,1e-4,,5\n"
        "6,0,0.0"  # torn last line of a log being written: dropped silently
    )
    log = read_loss_csv(p)
    assert log.step.tolist() == [1, 2, 5]
    assert log.skipped == 3 and log.first_skipped_line == 3
    assert str(p) in log.warning and "3 unreadable rows" in log.warning


@pytest.mark.parametrize(
    "text, expect",
    [
        ("", "is empty"),
        ("   \n\n", "is empty"),
        ("time,value_x\n1,2\n", "no step and loss column"),
        ("step,lr\n1,2\n", "no loss column"),
        ("step,loss\nfoo,bar\nbaz\n", "no readable rows (2 unreadable rows skipped, first at line 2)"),
    ],
)
def test_malformed_logs_name_the_file(tmp_path, text, expect):
    p = tmp_path / "broken.csv"
    p.write_text(text)
    with pytest.raises(LoratuiError) as info:
        read_loss_csv(p)
    assert expect in info.value.message and str(p) in info.value.message
    assert info.value.where == str(p)
    s = summarize_run(p)
    assert s.status == "error" and expect in s.error


def test_foreign_csvs(tmp_path):
    # TrainTrain: a block of run parameters, then "Step, Loss, Learning Rate 1".
    tt = tmp_path / "traintrain.csv"
    tt.write_text(
        "network_rank,16\nmodel_version,sdxl\nStep, Loss, Learning Rate 1\n1, 0.30, 1e-4\n2, 0.25, 2e-4\n"
    )
    log = read_loss_csv(tt)
    assert (
        log.step.tolist() == [1, 2] and log.loss.tolist() == [0.30, 0.25] and log.lr.tolist() == [1e-4, 2e-4]
    )
    assert log.meta == {"network_rank": "16", "model_version": "sdxl"}
    assert summarize_run(tt).base_model == "sdxl"
    # TensorBoard export: Wall time,Step,Value (absolute timestamps -> duration is the span).
    tb = tmp_path / "tb.csv"
    tb.write_text("Wall time,Step,Value\n1700000000.5,10,0.3\n1700000030.5,20,0.2\n")
    log = read_loss_csv(tb)
    assert log.loss.tolist() == [0.3, 0.2] and log.last_seconds == pytest.approx(30.0)
    # kohya-style names and CRLF line ends.
    ko = tmp_path / "kohya.csv"
    ko.write_bytes(b"global_step,loss/current,loss/average,lr/unet\r\n1,0.5,0.5,1e-4\r\n2,0.3,0.4,1e-4\r\n")
    log = read_loss_csv(ko)
    assert log.loss.tolist() == [0.5, 0.3] and log.columns["loss"] == "loss/current" and log.lr is not None


def test_resumed_log_keeps_last_rows_per_step(tmp_path):
    p = tmp_path / "loss.csv"
    p.write_text("step,loss\n1,1\n2,2\n3,3\n2,20\n3,30\n4,40\n")
    log = read_loss_csv(p)
    assert log.step.tolist() == [1, 2, 3, 4] and log.loss.tolist() == [1, 20, 30, 40]


def test_fast_and_slow_paths_agree(tmp_path, monkeypatch):
    # Small chunks so the damaged-file path splits, halves and falls back to row-by-row several times.
    monkeypatch.setattr(csvbody, "_CHUNK_BYTES", 3000)
    monkeypatch.setattr(csvbody, "_SLOW_LINES", 8)
    make_run(tmp_path, "r", steps=300, seed=3)
    good = read_loss_csv(tmp_path / "runs/r/loss.csv")
    text = (tmp_path / "runs/r/loss.csv").read_text().splitlines()
    for at, junk in [(250, "1,2,3"), (180, "9,9,9,9,9,9,9,9"), (100, "garbage,,,"), (40, "x")]:
        text.insert(at, junk)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    slow = read_loss_csv(bad)
    assert slow.skipped == 4 and slow.first_skipped_line == 41
    for a, b in [
        (good.step, slow.step),
        (good.loss, slow.loss),
        (good.lr, slow.lr),
        (good.val_loss, slow.val_loss),
    ]:
        np.testing.assert_array_equal(a, b)


def test_config_diff(tmp_path):
    a = make_run(tmp_path, "a", lr=1e-4, rank=16)
    b = make_run(tmp_path, "b", lr=3e-4, rank=8)
    diff = {k: (x, y) for k, x, y in config_diff(run_config(a), run_config(b))}
    assert diff == {"name": ("a", "b"), "train.lr": (1e-4, 3e-4), "network.rank": (16, 8)}


def _ema_loop(values, w):
    last, out = 0.0, []
    for n, v in enumerate(values, 1):
        last = last * w + (1 - w) * v
        out.append(last / (1 - w**n))
    return np.array(out)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.6, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("n", [1, 63, 64, 700, 5001])
def test_ema_matches_tensorboard_recurrence(w, n):
    rng = np.random.default_rng(n)
    v = rng.random(n) + np.linspace(0, 2, n)
    np.testing.assert_allclose(smoothing.ema(v, w), _ema_loop(v, w), rtol=1e-9, atol=1e-12)


def test_smoothing_skips_nan_and_window():
    v = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    e = smoothing.ema(v, 0.5)
    assert math.isnan(e[1]) and e[0] == 1.0
    assert e[2] == pytest.approx((0.5 * 0.5 * 1 + 0.5 * 3) / 0.75)
    m = smoothing.moving_average(v, 2)
    assert m.tolist()[0] == 1.0 and math.isnan(m[1]) and m.tolist()[2:] == [2.0, 4.0, 6.0]


def test_summary_cli_text_and_json(tmp_path, capsys):
    make_run(tmp_path, "one", steps=100, seed=1)
    make_run(tmp_path, "two", steps=150, seed=2, status="stopped")
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "loss.csv").write_text("")
    rc = logs_main(["--summary", "--workspace", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1  # an unreadable log is reported to scripts
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["name", "date"]
    assert any(ln.startswith("one ") and ln.rstrip().endswith("done") and " 100 " in ln for ln in lines)
    assert any(ln.startswith("two ") and ln.rstrip().endswith("stopped") for ln in lines)
    assert any("broken" in ln and "is empty" in ln for ln in lines)
    rc = logs_main(["--summary", "--json", "--workspace", str(tmp_path)])
    data = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert data["two"]["steps"] == 150 and data["two"]["status"] == "stopped"
    assert data["broken"]["status"] == "error" and "empty" in data["broken"]["error"]
    assert data["one"]["best_val_loss"] is not None and data["one"]["base_model"] == "demo/models/tiny-sd15"


def test_summary_cli_targets(tmp_path, capsys):
    make_run(tmp_path, "one", steps=100, seed=1)
    other = tmp_path / "elsewhere.csv"
    other.write_text("global_step,train_loss\n1,0.5\n2,0.25\n")
    assert logs_main(["--summary", "--json", "--only", "--workspace", str(tmp_path), "one", str(other)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["steps"], d["status"]) for d in data] == [
        ("one", 100, "done"),
        ("elsewhere", 2, "imported"),
    ]
    assert logs_main(["--summary", "--workspace", str(tmp_path), "nosuchrun"]) == 2
    err = capsys.readouterr().err
    assert "not found: nosuchrun" in err and "hint:" in err


def test_run_name_wins_over_a_folder_without_a_loss_log(tmp_path, capsys, monkeypatch):
    """The demo workspace has demo/ (models, data) and runs/demo/: `loratui logs demo` means the run
    (before: "loss log not found: demo/loss.csv")."""
    make_run(tmp_path, "demo", steps=50, seed=1)
    (tmp_path / "demo" / "models").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert logs_main(["--summary", "--json", "--only", "--workspace", str(tmp_path), "demo"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["steps"], d["status"]) for d in data] == [("demo", 50, "done")]


def test_one_duration_text_for_tables_listings_and_the_run_view():
    from engine.runs.format import fmt_duration

    assert [fmt_duration(s) for s in (0, 12.9, 61, 245, 3600, 7620.5)] == [
        "0s",
        "12s",
        "1m01s",
        "4m05s",
        "1h00m",
        "2h07m",
    ]
    assert [fmt_duration(v) for v in (None, float("nan"), -1, "12", True)] == [""] * 5
    assert fmt_duration(None, "-") == "-"
