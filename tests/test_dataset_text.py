"""Users' text files go through one reader (engine.textfile): check and training agree on them."""

from __future__ import annotations

import codecs

import pytest

from engine.check import check, render_text
from engine.config import RunConfig, load_config
from engine.data.scan import scan_dataset
from engine.errors import LoratuiError
from engine.tagger.labels import load_labels


def _cfg(tmp_path, data):
    cfg = RunConfig()
    cfg.name = "enc"
    cfg.workspace = tmp_path
    cfg.model.base = ""
    cfg.dataset.dirs = [str(data)]
    cfg.dataset.trigger_word = "shapes"
    return cfg


def test_utf16_caption_is_trained_as_written(tmp_path, demo_dataset):
    # Windows Notepad "Unicode": was trained as "\ufeff" + NUL-separated letters and shown as ready.
    (demo_dataset / "5_shapes" / "img01.txt").write_bytes("red circle, Shapes".encode("utf-16"))
    scan = scan_dataset(_cfg(tmp_path, demo_dataset), hash_files=False)
    item = next(i for i in scan.items if i.rel.endswith("img01.png"))
    assert item.caption == "shapes, red circle"
    assert not scan.bad_captions


@pytest.mark.parametrize(
    ("encoding", "text", "expected"),
    [("cp932", "猫耳, 赤い髪, 笑顔, 学校の制服", "cp932"), ("latin-1", "café, crème brûlée, été", "cp1252")],
)
def test_other_encodings_are_problems_naming_file_and_encoding(
    tmp_path, demo_dataset, encoding, text, expected
):
    bad = demo_dataset / "extra" / "img08.txt"
    bad.write_bytes(text.encode(encoding))
    cfg = _cfg(tmp_path, demo_dataset)
    report = check(cfg)
    assert not report.trainable
    problem = " ".join(report.problems)
    assert "extra/img08.txt" in problem and "not UTF-8" in problem and expected in problem
    assert "verdict: NOT trainable" in render_text(report)
    assert not any(i.rel.endswith("img08.png") for i in report.scan.items)
    # Training refuses it too (the scan a run makes is strict), naming the file.
    with pytest.raises(LoratuiError) as info:
        scan_dataset(cfg, hash_files=False)
    assert "img08.txt" in info.value.message


def test_config_and_tag_list_read_with_bom(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_bytes(codecs.BOM_UTF16_LE + 'name = "bom"\n[train]\nsteps = 7\n'.encode("utf-16-le"))
    cfg = load_config(toml, env={}, workspace=tmp_path)
    assert (cfg.name, cfg.train.steps) == ("bom", 7)
    toml.write_bytes('name = "café"\n'.encode("cp1252"))
    with pytest.raises(LoratuiError, match="not UTF-8"):
        load_config(toml, env={}, workspace=tmp_path)
    tags = tmp_path / "selected_tags.csv"
    tags.write_bytes(("tag_id,name,category,count\n1,猫耳,0,5\n2,general,9,1\n").encode("utf-8-sig"))
    assert load_labels(tags).names[0] == "猫耳"
    tags.write_bytes(("tag_id,name,category,count\n1,猫耳,0,5\n").encode("cp932"))
    with pytest.raises(LoratuiError, match="not UTF-8"):
        load_labels(tags)


def test_sample_prompts_file_through_the_same_reader(tmp_path):
    from engine.config.prompts import prompt_lines

    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.sample.prompts_file = "prompts.txt"
    (tmp_path / "prompts.txt").write_bytes("# a comment\nshapes, red circle\n猫耳\n".encode("utf-16"))
    assert [line for line, _ in prompt_lines(cfg)] == ["shapes, red circle", "猫耳"]
    (tmp_path / "prompts.txt").write_bytes("猫耳, 赤い髪, 笑顔, 学校の制服\n".encode("cp932"))
    with pytest.raises(LoratuiError) as info:
        prompt_lines(cfg)
    assert info.value.where == "sample.prompts_file" and "prompts.txt" in info.value.message
    assert "cp932" in info.value.message


def _readers(tmp_path):
    """Each reader of a user's file that is not a caption, with the key its errors name."""
    from engine.collect.settings import load_prompts
    from engine.collect.workflow import load_workflow
    from engine.config.load import read_toml
    from engine.config.prompts import prompt_lines

    def sample_prompts_file(path):
        cfg = RunConfig()
        cfg.workspace = tmp_path
        cfg.sample.prompts_file = str(path)
        return prompt_lines(cfg)

    return [
        (read_toml, None),
        (load_workflow, "collect.workflow"),
        (load_prompts, "collect.prompts"),
        (sample_prompts_file, "sample.prompts_file"),
    ]


@pytest.mark.parametrize("case", ["missing", "folder", "cp1252"])
def test_every_file_reader_names_the_file_and_its_key(tmp_path, case):
    # One rule (engine.textfile.read_user_file) for all of them: each had its own copy before, and a
    # folder given as the collect prompts file was reported with no hint.
    path = tmp_path / "in.json"
    if case == "folder":
        path.mkdir()
    elif case == "cp1252":
        path.write_bytes("café crème, naïve".encode("cp1252"))
    for reader, key in _readers(tmp_path):
        with pytest.raises(LoratuiError) as exc:
            reader(path)
        err = exc.value
        assert str(path) in err.message or case == "cp1252", (reader.__name__, err.message)
        assert err.where == (key or str(path)), (reader.__name__, err.where)
        assert err.hint, reader.__name__
        if case == "cp1252":
            assert "not UTF-8" in err.message and "UTF-8" in err.hint
