"""train.lr_step_rules: the "step" schedule with user milestones (TrainTrain's lr step rules)."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, load_config_text
from engine.config.steprules import StepRulesError, parse_step_rules, step_rule_factor
from engine.train.schedules import lr_factor
from tests.train_util import config_text, finished, of_type, run_in_process


def test_the_three_written_forms_parse_alike():
    want = [(100, 0.5), (200, 0.25)]
    assert parse_step_rules("100:0.5,200:0.25") == want
    assert parse_step_rules(" 100 : 0.5 ; 200:0.25 ") == want
    assert parse_step_rules(["100:0.5", "200:0.25"]) == want
    assert parse_step_rules([[100, 0.5], [200, 0.25]]) == want
    assert parse_step_rules("") == [] and parse_step_rules([]) == []


@pytest.mark.parametrize(
    "value, says",
    [
        ("100=0.5", "STEP:FACTOR"),
        ("100:half", "STEP:FACTOR"),
        ("10.5:0.5", "whole number"),
        ("0:0.5", "at least 1"),
        ("100:-1", "at least 0"),
        ("200:0.5,100:0.25", "steps must increase"),
        ("100:0.5,100:0.25", "steps must increase"),
        ([[100, 0.5, 3]], "neither"),
        (5, "neither"),
    ],
)
def test_malformed_rules_say_what_is_wrong(value, says):
    with pytest.raises(StepRulesError, match=says):
        parse_step_rules(value)


def test_factor_holds_from_each_milestone_on():
    rules = [(100, 0.5), (200, 0.25)]
    # `done` updates already made: the 101st update (done = 100) is the first at 0.5.
    assert [step_rule_factor(rules, d) for d in (0, 99, 100, 199, 200, 10_000)] == [
        1,
        1,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    assert [lr_factor("step", d, 300, step_rules=rules) for d in (99, 100, 200)] == [1.0, 0.5, 0.25]
    # warm-up still ramps first; the evenly spaced halvings are replaced, not added to
    assert lr_factor("step", 0, 300, warmup=4, step_rules=rules) == pytest.approx(1 / 5)
    assert lr_factor("step", 150, 300, cycles=2, step_rules=rules) == 0.5
    assert lr_factor("step", 150, 300, cycles=2) == 0.5 and lr_factor("step", 50, 300, cycles=2) == 1.0


def _cfg(train: dict):
    lines = ['name = "x"', "[train]"] + [f"{k} = {v}" for k, v in train.items()]
    return load_config_text("\n".join(lines) + "\n")


def test_config_accepts_a_list_and_stores_the_text():
    cfg = _cfg({"scheduler": '"step"', "lr_step_rules": "[[100, 0.5], [200, 0.25]]"})
    assert cfg.train.lr_step_rules == "100:0.5,200:0.25"
    cfg = _cfg({"scheduler": '"step"', "lr_step_rules": '"100:0.5, 200:1e-1"'})
    assert cfg.train.lr_step_rules == "100:0.5,200:0.1"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        _cfg({"scheduler": '"step"', "lr_step_rules": '"100:0.5,50:1"'})
    assert err.value.where.endswith("train.lr_step_rules") and "steps must increase" in err.value.message
    with pytest.raises(ConfigError) as err:
        _cfg({"scheduler": '"cosine"', "lr_step_rules": '"100:0.5"'})
    assert err.value.where.endswith("train.lr_step_rules")
    assert 'scheduler = "step"' in err.value.hint


@pytest.mark.slow
def test_exact_multipliers_in_a_run_and_after_resume(tmp_path, tiny_sd15, demo_dataset):
    lr = 2e-3
    train = {"steps": 8, "scheduler": "step", "lr_step_rules": "3:0.5,6:0.25", "warmup_steps": 0, "lr": lr}
    want = {s: lr * (1.0 if s <= 3 else 0.5 if s <= 6 else 0.25) for s in range(1, 9)}
    text = config_text(tiny_sd15, demo_dataset, name="rules", train=train)
    rc, events, run_dir = run_in_process(tmp_path, text, stop_after_step=5)
    assert rc == 0 and finished(events)["status"] == "stopped"
    first = {e["step"]: e["lr"] for e in of_type(events, "step")}
    assert first == {s: want[s] for s in range(1, 6)}  # exact, no rounding allowed
    rc, events, _ = run_in_process(tmp_path, text, resume=True)
    assert rc == 0 and finished(events)["status"] == "done"
    resumed = {e["step"]: e["lr"] for e in of_type(events, "step")}
    assert resumed == {s: want[s] for s in range(6, 9)}
    # loss.csv has the same rates (one row per step, over both attempts)
    rows = (run_dir / "loss.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[4]) for r in rows] == [want[s] for s in range(1, 9)]


def test_check_warns_about_milestones_past_the_last_step(tmp_path):
    from engine.check import check

    cfg = _cfg({"steps": 100, "scheduler": '"step"', "lr_step_rules": '"50:0.5,100:0.1,400:0.01"'})
    cfg.mode = "ileco"  # no dataset needed for the check
    cfg.ileco.original_prompt = "a cat"
    warnings = [w for w in check(cfg).warnings if "lr_step_rules" in w]
    assert warnings == [
        "train.lr_step_rules: milestone(s) 100, 400 come after the last of the 100 steps and never apply"
    ]
