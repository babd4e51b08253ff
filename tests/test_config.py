"""Run config: loading, extends chains, overrides, validation messages, comment-keeping saves."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import (
    SCHEMA,
    ConfigError,
    RunConfig,
    dump_resolved,
    flatten,
    list_presets,
    load_config,
    load_config_text,
    save_preset,
    update_toml_file,
    validate_field,
)

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [e.render() for e in exc.value.errors]


def test_defaults_match_config_md():
    cfg = RunConfig()
    assert cfg.mode == "lora"
    assert cfg.dataset.caption_extensions == [".txt", ".caption"]
    assert cfg.dataset.resolution_wh() == (1024, 1024)
    assert cfg.train.optimizer == "adamw" and cfg.train.lr == 1e-4 and cfg.train.seed == 42
    assert cfg.save.format == "kohya" and cfg.save.precision == "fp16"
    # Every schema key has a help text for the form and the docs.
    assert all(spec.help for spec in SCHEMA)


def test_every_shipped_preset_validates():
    presets = list_presets(REPO)
    for name in ("sd15", "sdxl", "sdxl-character", "sdxl-style", "sd15-locon", "sdxl-loha", "demo"):
        assert name in presets, f"preset {name} missing"
    for name, path in presets.items():
        cfg = load_config(path, env={}, workspace=REPO)
        assert cfg.name, name


def test_extends_chain_merges_sections_key_by_key(tmp_path):
    write(tmp_path / "presets" / "base.toml", "[train]\nlr = 3e-4\nsteps = 10\n[network]\nrank = 8\n")
    write(tmp_path / "presets" / "mid.toml", 'extends = "base"\n[train]\nsteps = 20\n')
    cfg_path = write(tmp_path / "run.toml", 'extends = "mid"\nname = "r1"\n[network]\nalpha = 2\n')
    cfg = load_config(cfg_path, env={}, workspace=tmp_path)
    assert (cfg.train.lr, cfg.train.steps, cfg.network.rank, cfg.network.alpha) == (3e-4, 20, 8, 2.0)
    assert cfg.extends == "mid"


def test_shipped_preset_found_by_name_from_any_workspace(tmp_path):
    cfg = load_config(write(tmp_path / "a.toml", 'extends = "sdxl-character"\n'), env={}, workspace=tmp_path)
    assert cfg.model.family == "sdxl" and cfg.dataset.shuffle_tags is True and cfg.train.steps == 1600
    assert cfg.name == "a"  # no name: the file's stem


def test_precedence_cli_over_env_over_file(tmp_path):
    path = write(tmp_path / "run.toml", 'name = "p"\n[train]\nlr = 1e-3\nsteps = 5\n')
    env = {"LORATUI_TRAIN__LR": "5e-5", "LORATUI_TRAIN__STEPS": "7", "LORATUI_VENV": "/x"}
    cfg = load_config(path, env=env, workspace=tmp_path)
    assert (cfg.train.lr, cfg.train.steps) == (5e-5, 7)
    cfg = load_config(path, sets=["train.lr=2e-5", "dataset.dirs=['a', 'b']", "name=q"], env=env)
    assert (cfg.train.lr, cfg.dataset.dirs, cfg.name) == (2e-5, ["a", "b"], "q")


def test_unknown_key_says_did_you_mean(tmp_path):
    path = write(tmp_path / "bad.toml", "[train]\nlearning_rat = 1e-4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert exc.value.message == 'unknown key "train.learning_rat"'
    assert exc.value.where == f"{path}: train.learning_rat"
    assert exc.value.hint == 'did you mean "train.lr"?' or "learning" in exc.value.hint
    with pytest.raises(ConfigError) as exc:
        load_config_text("[train]\nlearning_rate = 1e-4\n", source="x.toml")
    assert exc.value.hint == 'did you mean "train.lr"?'
    with pytest.raises(ConfigError) as exc:
        load_config_text("[trian]\nlr = 1\n", source="x.toml")
    assert exc.value.message == 'unknown key "trian"' and exc.value.hint == 'did you mean "train"?'


def test_foreign_table_lists_our_sections_and_where_its_keys_go():
    """kohya sd-scripts' sectioned configs (before: only the generic "see ... for the keys a run config has")."""
    text = "[training_arguments]\nlearning_rate = 1e-4\nmax_train_steps = 10\nfoo = 1\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, source="x.toml")
    assert exc.value.message == 'unknown key "training_arguments"'
    assert exc.value.hint.startswith("the sections are [model], [dataset], ")
    assert exc.value.hint.endswith("(learning_rate -> train.lr, max_train_steps -> train.steps)")


@pytest.mark.parametrize(
    "line, hint",
    [
        # flat kohya sd-scripts keys at top level name our section and key (before: only the generic hint)
        ("learning_rate = 1e-4", 'put it under [train] (as "train.lr")'),
        ("save_precision = 'fp16'", 'put it under [save] (as "save.precision")'),
        ("mixed_precision = 'bf16'", 'put it under [train] (as "train.precision")'),
        # before: 'did you mean "network"?' and 'did you mean "train"?'
        ("network_dim = 8", 'put it under [network] (as "network.rank")'),
        ("rank = 8", 'put it under [network] (as "network.rank")'),
        ("nmae = 'x'", 'did you mean "name"?'),
    ],
)
def test_top_level_section_keys_name_their_section(line, hint):
    with pytest.raises(ConfigError) as exc:
        load_config_text(line + "\n", source="x.toml")
    assert exc.value.hint == hint


def test_wrong_type_and_bad_enum_messages():
    with pytest.raises(ConfigError) as exc:
        load_config_text('[train]\nlr = "fast"\nbatch_size = 1.5\noptimizer = "adamx"\n', source="run.toml")
    assert errors_of(exc) == [
        'error: train.lr: expected a number, found "fast" (string)\n  where: run.toml: train.lr\n  hint: Learning rate',
        "error: train.batch_size: expected a whole number, found 1.5 (number)\n"
        "  where: run.toml: train.batch_size\n  hint: Images per batch",
        "error: train.optimizer: expected one of adamw, adamw8bit, paged_adamw8bit, adam, sgd, rmsprop, "
        'lion, lion8bit, paged_lion8bit, prodigy, adafactor, found "adamx" (string); did you mean "adam"?\n'
        "  where: run.toml: train.optimizer\n"
        "  hint: train.optimizer takes one of: adamw, adamw8bit, paged_adamw8bit, adam, sgd, rmsprop, lion, "
        "lion8bit, paged_lion8bit, prodigy, adafactor",
    ]


def test_error_names_the_file_the_value_came_from(tmp_path):
    write(tmp_path / "presets" / "base.toml", "[train]\nsteps = -3\n")
    path = write(tmp_path / "run.toml", 'extends = "base"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, workspace=tmp_path)
    assert exc.value.where.endswith("base.toml: train.steps")
    assert "expected a value at least 1, found -3" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"LORATUI_TRAIN__STEPS": "0"}, workspace=tmp_path)
    assert exc.value.where == "environment LORATUI_TRAIN__STEPS: train.steps"
    with pytest.raises(ConfigError) as exc:
        load_config(path, sets=["train.steps=abc"], env={}, workspace=tmp_path)
    assert exc.value.where == "--set train.steps"  # not "--set train.steps: train.steps"
    with pytest.raises(ConfigError) as exc:
        load_config(path, sets=["train.steps=5", "train.stepz=5"], env={}, workspace=tmp_path)
    assert exc.value.where == "--set train.stepz" and exc.value.hint == 'did you mean "train.steps"?'


def test_extends_cycle_detected(tmp_path):
    write(tmp_path / "presets" / "a.toml", 'extends = "b"\n')
    write(tmp_path / "presets" / "b.toml", 'extends = "a"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "presets" / "a.toml", env={}, workspace=tmp_path)
    assert exc.value.message.startswith("extends cycle: ")
    assert exc.value.message.count("a.toml") == 2 and "b.toml" in exc.value.message
    assert exc.value.hint == "remove one of the extends keys so the chain ends"


def test_missing_file_and_missing_preset(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml", env={})
    assert exc.value.message == f"config file not found: {tmp_path / 'nope.toml'}"
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path / "r.toml", 'extends = "sdxl-charcter"\n'), env={}, workspace=tmp_path)
    assert exc.value.message == 'extends: no preset named "sdxl-charcter"'
    assert exc.value.hint == 'did you mean "sdxl-character"?'
    assert exc.value.where.endswith("r.toml: extends")


def test_invalid_toml_names_the_file():
    with pytest.raises(ConfigError) as exc:
        load_config_text("[train\nlr = 1", source="broken.toml")
    assert exc.value.message.startswith("invalid TOML in broken.toml:")


def test_bad_set_override():
    with pytest.raises(ConfigError) as exc:
        load_config_text("", sets=["train.lr"])
    assert exc.value.message == '--set "train.lr" is not key=value'


def test_resolved_dump_round_trips(tmp_path):
    cfg = load_config(REPO / "presets" / "sdxl-style.toml", env={}, workspace=tmp_path)
    text = dump_resolved(cfg)
    again = load_config_text(text, workspace=tmp_path)
    assert flatten(again) | {"extends": ""} == flatten(cfg) | {"extends": ""}
    assert "[caption_auto]" in text and "min_snr_gamma = 5.0" in text


def test_queue_table_is_not_part_of_the_config():
    cfg = load_config_text('name = "x"\n[queue]\nstatus = "pending"\n')
    assert cfg.name == "x"


def test_validate_field_for_the_form():
    assert validate_field("train.lr", 1e-4) is None
    assert validate_field("train.lr", 0.0) == "expected a value greater than 0, found 0.0 (number)"
    assert validate_field("dataset.caption", "files").startswith("expected one of none, phrase, file")
    assert validate_field("dataset.resolution", [512, 768]) is None
    assert validate_field("nope.key", 1) == 'unknown key "nope.key"'


PRESET_TEXT = """\
# My preset: comments must survive a save.
extends = "sd15"   # inherit the basics

[train]
# learning rate tuned by hand
lr = 1e-4          # keep
steps = 100

[dataset]
dirs = ["/data/a"] # the images
"""


def test_save_changes_one_value_and_keeps_every_other_byte(tmp_path):
    path = write(tmp_path / "mine.toml", PRESET_TEXT)
    cfg = load_config(path, env={}, workspace=tmp_path)
    cfg.train.steps = 250
    save_preset(path, cfg)
    after = path.read_text()
    expected = PRESET_TEXT.replace("steps = 100", "steps = 250")
    assert after == expected
    # Saving without a change leaves the file identical.
    save_preset(path, load_config(path, env={}, workspace=tmp_path))
    assert path.read_text() == expected


def test_save_adds_a_key_missing_from_the_file(tmp_path):
    path = write(tmp_path / "mine.toml", PRESET_TEXT)
    cfg = load_config(path, env={}, workspace=tmp_path)
    cfg.network.rank = 64
    save_preset(path, cfg)
    text = path.read_text()
    assert text.startswith(PRESET_TEXT.split("[dataset]")[0])
    assert load_config(path, env={}, workspace=tmp_path).network.rank == 64


def test_save_as_new_preset_writes_only_changes(tmp_path):
    cfg = load_config_text('extends = "sd15"\nname = "n"\n', workspace=tmp_path)
    cfg.train.lr = 3e-4
    out = save_preset(tmp_path / "presets" / "new.toml", cfg)
    text = out.read_text()
    assert 'extends = "sd15"' in text and "lr = 0.0003" in text and "steps" not in text
    assert load_config(out, env={}, workspace=tmp_path).train.lr == 3e-4


def test_update_toml_file_is_atomic_and_keeps_comments(tmp_path):
    path = write(tmp_path / "p.toml", "# c\n[save]\nkeep_last = 1 # n\n")
    update_toml_file(path, {"save.keep_last": 3})
    assert path.read_text() == "# c\n[save]\nkeep_last = 3 # n\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_schema_covers_the_config_contract():
    """Every key of CONFIG.md's contract exists with the documented default."""
    import re
    import tomllib

    contract = REPO.parent / "shared" / "CONFIG.md"
    if not contract.exists():
        pytest.skip("../shared/CONFIG.md is not beside this checkout")
    block = re.search(r"```toml\n(.*?)```", contract.read_text(), re.S).group(1)
    documented = tomllib.loads(block)
    examples = {"name", "extends", "model.base", "dataset.dirs"}  # example values, not defaults
    defaults = flatten(RunConfig())
    for key, value in documented.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, val in items:
            dotted = f"{key}.{sub}" if sub else key
            assert dotted in defaults, f"{dotted} of CONFIG.md is missing from the schema"
            if dotted not in examples:
                assert defaults[dotted] == val, dotted
    # The documented example itself is a valid config.
    assert load_config_text(block).name == "mychar-v1"


def test_reference_docs_list_every_key():
    from engine.config.docs import reference_markdown

    text = reference_markdown()
    for spec in SCHEMA:
        assert f"| `{spec.key}`" in text


def test_missing_workspace_is_an_error_before_anything_is_written(tmp_path):
    path = write(tmp_path / "run.toml", 'name = "x"\n')
    for ws in (tmp_path / "nope", path):  # missing, or a file
        with pytest.raises(ConfigError) as exc:
            load_config(path, env={}, workspace=ws)
        assert exc.value.message == f"workspace folder not found: {ws}"
        assert exc.value.where == "--workspace" and "loratui demo" in exc.value.hint
    assert not (tmp_path / "nope").exists()
    assert load_config(path, env={}, workspace=tmp_path).workspace == tmp_path.resolve()
