"""One rule per fact: the run-name rule (config, queue, engine), string keys never parsed as numbers,
and other trainers' key names pointing at ours ahead of spelling distance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config, load_config_text
from engine.config.aliases import ALIASES, SECTION_ALIASES
from engine.config.schema import NAME_HINT, SCHEMA_BY_KEY, name_key, name_problem
from engine.errors import LoratuiError
from engine.runqueue import QueueStore

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "presets" / "demo.toml"


def load(tmp_path, sets, env=None):
    return load_config(DEMO, sets=sets, env=env or {}, workspace=tmp_path)


# --- the name rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [" ", "   ", "a\nb", "a\x00b", "tab\there", "a/b", "a\\b", "c:d", ".hidden", " lead", "x" * 101]
)
def test_bad_names_are_refused_by_config_validation(tmp_path, name):
    assert name_problem(name)
    path = tmp_path / "run.toml"
    path.write_text(f"name = {json.dumps(name)}\n", encoding="utf-8")  # a JSON string is a TOML string
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, workspace=tmp_path)
    assert exc.value.hint == NAME_HINT and exc.value.where.endswith("name")


def test_empty_name_override_never_falls_back_to_the_presets(tmp_path):
    # The example: `--set name=` used to become the preset's name "demo".
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, ["name="])
    assert "empty" in exc.value.message and exc.value.where == "--set name"
    # Another example of the kind: a value of spaces only.
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, ['name="  "'])
    assert "only spaces" in exc.value.message


def test_names_with_spaces_pass_and_the_hint_says_so(tmp_path):
    assert load(tmp_path, ["name=my run"]).name == "my run"
    assert "spaces" in NAME_HINT  # the hint no longer says "letters, digits, - and _ only"
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, ["name=a/b"])
    assert exc.value.hint == NAME_HINT


def test_string_keys_are_never_parsed_as_numbers(tmp_path):
    assert load(tmp_path, ["name=nan"]).name == "nan"
    assert load(tmp_path, ["name=123"]).name == "123"
    cfg = load(tmp_path, ["dataset.trigger_word=true", "dataset.phrase=1e5", 'model.vae="inf"'])
    assert (cfg.dataset.trigger_word, cfg.dataset.phrase, cfg.model.vae) == ("true", "1e5", "inf")
    # Environment variables go through the same reading.
    cfg = load(tmp_path, [], env={"LORATUI_DATASET__TRIGGER_WORD": "nan", "LORATUI_TRAIN__LR": "5e-5"})
    assert cfg.dataset.trigger_word == "nan" and cfg.train.lr == 5e-5
    # Number keys still read numbers; list keys read lists, path lists also one bare path.
    cfg = load(tmp_path, ["train.steps=7", 'sample.prompts=["1"]', "dataset.dirs=data/10_x"])
    assert (cfg.train.steps, cfg.sample.prompts, cfg.dataset.dirs) == (7, ["1"], ["data/10_x"])


def test_names_differing_only_in_case_are_one_name(tmp_path):
    assert name_key("dup") == name_key("Dup") == name_key("DUP")
    store = QueueStore(tmp_path)
    store.add(load(tmp_path, ["name=dup"]))
    with pytest.raises(LoratuiError) as exc:
        store.add(load(tmp_path, ["name=Dup"]))
    assert "differs only in case" in exc.value.message
    # Another example of the kind: Unicode case folding (German sharp s).
    store.add(load(tmp_path, ["name=straße"]))
    with pytest.raises(LoratuiError):
        store.add(load(tmp_path, ["name=STRASSE"]))


def test_queue_refuses_a_bad_name_even_without_the_loader(tmp_path):
    cfg = load(tmp_path, [])
    cfg.name = "a\nb"
    with pytest.raises(LoratuiError) as exc:
        QueueStore(tmp_path).add(cfg)
    assert exc.value.hint == NAME_HINT
    assert not (tmp_path / "queue").exists() or not list((tmp_path / "queue").glob("*.toml"))


def test_check_names_a_run_folder_that_differs_only_in_case(tmp_path):
    from engine.check import run_folder_warnings

    (tmp_path / "runs" / "Dup").mkdir(parents=True)
    problems = run_folder_warnings(load(tmp_path, ["name=dup"]))
    assert problems and "only in case" in problems[0]


# --- aliases ----------------------------------------------------------------------------------------


def hint_for(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config_text('name = "x"\n' + text)
    return exc.value.hint


def test_onetrainer_lora_rank_points_to_rank_not_conv_rank():
    assert hint_for("[network]\nlora_rank = 8\n") == 'did you mean "network.rank"?'
    assert hint_for("[network]\nlora_alpha = 8\n") == 'did you mean "network.alpha"?'


def test_kohya_flat_network_module_points_to_network_type():
    assert hint_for('network_module = "networks.lora"\n') == 'put it under [network] (as "network.type")'
    # ai-toolkit's names for the same keys, and a section-dependent one.
    assert hint_for("[network]\nlinear = 8\n") == 'did you mean "network.rank"?'
    assert hint_for('[save]\ndtype = "fp16"\n') == 'did you mean "save.precision"?'
    assert hint_for("[train]\ncheckpointing_steps = 5\n") == 'put it under [save] (as "save.every_steps")'


def test_every_alias_points_at_a_real_key_and_none_shadows_ours():
    for alias, target in [*ALIASES.items(), *((a, t) for (_, a), t in SECTION_ALIASES.items())]:
        assert target in SCHEMA_BY_KEY, (alias, target)
    for section, alias in SECTION_ALIASES:
        assert f"{section}.{alias}" not in SCHEMA_BY_KEY  # an alias never hides one of our keys
    for alias, target in ALIASES.items():
        assert alias not in {s.key for s in SCHEMA_BY_KEY.values() if s.section == target.split(".")[0]}


# --- option conflicts are config validation's (check, the form and the queue see them) -------------


@pytest.mark.parametrize(
    "sets, key, message, hint",
    [
        (
            ["mode=ileco", "ileco.original_prompt=a cat", "network.train_text_encoder=true"],
            "network.train_text_encoder",
            "mode ileco trains the UNet only (its text embeddings are computed once)",
            'set network.train_text_encoder = false (and leave "BASE" out of network.blocks)',
        ),
        (
            ["mode=difference", "network.train_text_encoder=true"],
            "network.train_text_encoder",
            "mode difference trains the UNet only (its text embeddings are computed once)",
            'set network.train_text_encoder = false (and leave "BASE" out of network.blocks)',
        ),
        (
            ["mode=difference", "network.init_from=old.safetensors"],
            "network.init_from",
            "network.init_from is not supported in mode difference",
            "leave network.init_from empty: both passes start from fresh adapters",
        ),
    ],
)
def test_mode_conflicts_are_config_errors(tmp_path, sets, key, message, hint):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, sets)
    found = [e for e in exc.value.errors if e.where.endswith(key)]
    assert [(e.message, e.hint) for e in found] == [(message, hint)]


def test_check_reports_a_mode_conflict_as_a_config_error(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "engine", "check", str(DEMO), "--workspace", str(tmp_path), "--json"]
        + ["--set", "mode=ileco", "--set", "ileco.original_prompt=a cat"]
        + ["--set", "network.train_text_encoder=true"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["message"] == "mode ileco trains the UNet only (its text embeddings are computed once)"
    assert error["where"].endswith("network.train_text_encoder")
