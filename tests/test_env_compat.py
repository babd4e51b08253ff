"""Environment variables as config values: LORATUI_<SECTION>__<KEY>, and LoRACat's names (opt-in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config
from engine.config.compat import ENV_ALIASES

REPO = Path(__file__).resolve().parents[1]

# A value for every alias and what its key(s) must read afterwards (None: the value as written).
SAMPLES = {
    "LEARNING_RATE": ("7e-4", 7e-4),
    "TRAIN_BATCH_SIZE": ("3", 3),
    "GRADIENT_ACCUMULATION_STEPS": ("2", 2),
    "NUM_TRAIN_EPOCHS": ("5", 5),
    "LORA_RANK": ("8", 8),
    "RESOLUTION": ("768", 768),
    "MIXED_PRECISION": ("no", "fp32"),  # accelerate's spelling of full precision
    "TRIGGER_WORD": ("true", "true"),  # another tool's text stays text, not a TOML boolean
    "CAPTION_BATCH_SIZE": ("4", 4),
    "DATALOADER_NUM_WORKERS": ("1", 1),
    "GLOBAL_SEED": ("123", 123),
    "COMFYUI_ENDPOINT": ("http://127.0.0.1:8189", "http://127.0.0.1:8189"),
    "COMFYUI_DELAY": ("1.5", 1.5),
}


def _read(cfg, dotted: str):
    section, _, key = dotted.partition(".")
    return getattr(getattr(cfg, section), key)


def _write(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text('name = "e"\n' + text, encoding="utf-8")
    return path


def test_every_alias_has_a_sample():
    assert set(ENV_ALIASES) <= set(SAMPLES)


@pytest.mark.parametrize("variable", sorted(ENV_ALIASES))
def test_each_alias_reaches_its_key_only_with_the_opt_in(tmp_path, variable):
    raw, want = SAMPLES[variable]
    path = _write(tmp_path)
    default = load_config(path, env={}, workspace=tmp_path)
    on = load_config(path, env={variable: raw}, workspace=tmp_path, env_compat=True)
    off = load_config(path, env={variable: raw}, workspace=tmp_path)
    for key in ENV_ALIASES[variable]:
        assert _read(on, key) == want
        assert _read(off, key) == _read(default, key) != want
    assert [(v.variable, v.applied) for v in on.env_values] == [(variable, True)] * len(ENV_ALIASES[variable])
    ignored = off.env_values
    assert ignored and all(not v.applied and "--env-compat" in v.note for v in ignored)


def test_the_opt_in_from_the_file_and_our_names_win(tmp_path):
    path = _write(tmp_path, "[compat]\nenv = true\n[train]\nlr = 1e-4\n")
    cfg = load_config(path, env={"LEARNING_RATE": "7e-4", "LORA_RANK": "8"}, workspace=tmp_path)
    assert (cfg.train.lr, cfg.network.rank) == (7e-4, 8)
    env = {"LEARNING_RATE": "7e-4", "LORATUI_TRAIN__LR": "5e-5"}
    cfg = load_config(path, env=env, workspace=tmp_path)
    assert cfg.train.lr == 5e-5
    assert {v.variable: v.applied for v in cfg.env_values} == {
        "LORATUI_TRAIN__LR": True,
        "LEARNING_RATE": False,
    }
    cfg = load_config(path, sets=["train.lr=2e-5"], env=env, workspace=tmp_path)
    assert cfg.train.lr == 2e-5


def test_a_bad_alias_value_names_the_variable(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"LEARNING_RATE": "fast"}, workspace=tmp_path, env_compat=True)
    assert exc.value.where == "environment LEARNING_RATE: train.lr"
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"MIXED_PRECISION": "fp8"}, workspace=tmp_path, env_compat=True)
    assert exc.value.where == "environment MIXED_PRECISION: train.precision"


def test_loratui_names_that_name_no_key_are_warned_about(tmp_path):
    env = {"LORATUI_TRAIN_LR": "5e-5", "LORATUI_VENV": "/x", "LORATUI_TORCH_SPEC": "torch", "LORATUI_LR": "1"}
    cfg = load_config(_write(tmp_path), env=env, workspace=tmp_path)
    assert cfg.train.lr == 1e-4
    assert len(cfg.env_warnings) == 2
    first = next(w for w in cfg.env_warnings if "LORATUI_TRAIN_LR " in w)
    assert "did you mean LORATUI_TRAIN__LR?" in first
    assert all("VENV" not in w and "TORCH" not in w for w in cfg.env_warnings)


def test_a_daemon_worker_environment_gives_no_warning(tmp_path):
    # Seen in the TUI: every run the daemon started warned "LORATUI_PINNED_DEVICES names no config
    # key; did you mean LORATUI_TRAIN__DEVICES?" (the daemon sets it for its workers).
    env = {"LORATUI_PINNED_DEVICES": "cpu0", "LORATUI_DEVICES": "cpu0,cpu1", "LORATUI_SERVE_IDLE_S": "30"}
    cfg = load_config(_write(tmp_path), env=env, workspace=tmp_path)
    assert cfg.env_warnings == []


def test_every_tool_variable_the_code_reads_is_known():
    # The kind of the case above: a LORATUI_ name without "__" that loratui reads (or sets for its
    # children) and the config reader does not know is reported to the user as a misspelt key.
    import re

    from engine.config.compat import TOOL_VARIABLES

    found = set()
    for folder in ("engine", "tui", "bench", ".ci"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in ("", ".py", ".sh"):
                found |= set(re.findall(r"LORATUI_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore")))
    tool = {name for name in found if "__" not in name}
    assert tool and tool <= TOOL_VARIABLES, sorted(tool - TOOL_VARIABLES)


def _check(tmp_path, config: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ENV_ALIASES and not k.startswith("LORATUI_")}
    full.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "engine", "check", str(config), "--workspace", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=120,
    )


def test_check_shows_what_came_from_the_environment(tmp_path, demo_dataset):
    config = _write(tmp_path, f"[dataset]\ndirs = [{json.dumps(str(demo_dataset))}]\n")
    env = {"LEARNING_RATE": "7e-4", "LORATUI_TRAIN__STEPS": "9", "LORATUI_TRAIN_STEP": "3"}
    out = _check(tmp_path, config, env).stdout
    assert "LORATUI_TRAIN__STEPS=9 -> train.steps" in out
    assert "LEARNING_RATE=7e-4 -> train.lr: ignored (pass --env-compat" in out
    assert "warning: environment variable LORATUI_TRAIN_STEP names no config key" in out
    out = _check(tmp_path, config, env, "--env-compat", "--json").stdout
    report = json.loads(out)
    assert {(v["variable"], v["key"], v["applied"]) for v in report["environment"]} == {
        ("LEARNING_RATE", "train.lr", True),
        ("LORATUI_TRAIN__STEPS", "train.steps", True),
    }


def test_workers_never_apply_the_environment_twice(monkeypatch):
    from engine.serve import worker_env

    monkeypatch.setenv("LEARNING_RATE", "7e-4")
    monkeypatch.setenv("LORATUI_TRAIN__LR", "5e-5")
    monkeypatch.setenv("LORATUI_STOP_GRACE", "1")
    env = worker_env()
    assert "LEARNING_RATE" not in env and "LORATUI_TRAIN__LR" not in env and env["LORATUI_STOP_GRACE"] == "1"


def test_queue_add_takes_the_opt_in_and_says_what_it_did(tmp_path):
    (tmp_path / "data").mkdir()
    config = _write(tmp_path, '[dataset]\ndirs = ["data"]\n[train]\nsteps = 5\n')
    env = {k: v for k, v in os.environ.items() if k not in ENV_ALIASES and not k.startswith("LORATUI_")}
    env.update(PYTHONPATH=str(REPO), LEARNING_RATE="7e-4")

    def add(*extra):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tui.cli",
                "queue",
                "add",
                str(config),
                "--workspace",
                str(tmp_path),
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )

    def queued_lr() -> list[float]:
        import tomllib

        return sorted(
            tomllib.loads(p.read_text())["train"]["lr"] for p in (tmp_path / "queue").glob("*.toml")
        )

    out = add()
    assert out.returncode == 0, out.stderr
    assert "LEARNING_RATE=7e-4 -> train.lr: ignored (pass --env-compat" in out.stderr
    assert queued_lr() == [1e-4]
    out = add("--env-compat", "--set", "name=e2")
    assert out.returncode == 0, out.stderr
    assert "from the environment: LEARNING_RATE=7e-4 -> train.lr" in out.stderr
    assert queued_lr() == [1e-4, 7e-4]  # the entry holds the resolved value: workers never re-read it
