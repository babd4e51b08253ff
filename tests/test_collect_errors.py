"""Every way a collect can go wrong ends with a message naming the place and a hint; nothing
downloaded is lost."""

from __future__ import annotations

import errno
import json
import socket
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
from comfy_server import IMG2IMG, TXT2IMG, ComfyServer, write_workflow
from test_collect import batch_config, collect, full_config, images_in

from engine.collect import store as store_mod
from engine.config import ConfigError, load_config_text
from engine.errors import LoratuiError


@pytest.fixture
def server(tmp_path):
    srv = ComfyServer(tmp_path / "comfy").start()
    yield srv
    srv.stop()


def error_of(cfg) -> LoratuiError:
    with pytest.raises(LoratuiError) as info:
        collect(cfg)
    return info.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_names_the_url_and_how_to_start_comfyui(tmp_path):
    port = free_port()
    err = error_of(batch_config(tmp_path, f"http://127.0.0.1:{port}", ["a"], retries=1))
    assert f"cannot connect to ComfyUI at http://127.0.0.1:{port}" in err.message
    assert f"--listen 127.0.0.1 --port {port}" in err.hint and "COMFYUI_ENDPOINT" in err.hint


def test_wrong_endpoint_is_not_comfyui(tmp_path):
    (tmp_path / "site").mkdir()
    handler = lambda *a, **k: SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "site"), **k)  # noqa: E731
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        err = error_of(batch_config(tmp_path, f"http://127.0.0.1:{httpd.server_port}", ["a"]))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "answered HTTP 404" in err.message and "not a ComfyUI server" in err.message
    assert "--listen" in err.hint


def test_ui_format_workflow_is_refused_saying_so(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["a"])
    ui = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0, "MODEL"]]}
    (tmp_path / "txt2img.json").write_text(json.dumps(ui))
    err = error_of(cfg)
    assert "UI format" in err.message and '"nodes" and "links"' in err.message
    assert "API" in err.hint and err.where == "collect.workflow"


def test_missing_node_lists_the_ids_with_class_types(tmp_path, server):
    err = error_of(batch_config(tmp_path, server.url, ["a"], seed_node="42"))
    assert 'collect.seed_node = "42": no node with that id' in err.message
    assert "3 (KSampler)" in err.hint and "9 (SaveImage)" in err.hint and "10 (KSampler)" in err.hint
    assert err.where == "collect.seed_node"


@pytest.mark.parametrize(
    ("key", "node", "wanted", "fits"),
    [
        ("seed_node", "6", "a sampler", "3 (KSampler), 10 (KSampler)"),
        ("positive_prompt_node", "3", "a text encoder", "6 (CLIPTextEncode), 7 (CLIPTextEncode)"),
        ("output_node", "8", "a SaveImage or PreviewImage node", "9 (SaveImage)"),
    ],
)
def test_mapped_node_of_the_wrong_class(tmp_path, server, key, node, wanted, fits):
    err = error_of(batch_config(tmp_path, server.url, ["a"], **{key: node}))
    assert f'collect.{key} = "{node}" is a' in err.message and wanted in err.message
    assert fits in err.hint


def test_loader_node_of_the_wrong_class(tmp_path, server):
    err = error_of(full_config(tmp_path, server.url, image_loader_node="2"))
    assert 'collect.image_loader_node = "2" is a ImageInvert node, not a LoadImage node' in err.message
    assert "1 (LoadImage)" in err.hint


def test_output_prefix_that_matches_no_saveimage(tmp_path, server):
    err = error_of(full_config(tmp_path, server.url, output_prefix="nope"))
    assert "no SaveImage node has a filename_prefix starting with it" in err.message
    assert '4 ("lora/ref")' in err.hint and '5 ("other")' in err.hint


def test_comfyui_rejecting_the_prompt_shows_node_errors(tmp_path, server):
    wf = json.loads(json.dumps(TXT2IMG))
    del wf["8"]["inputs"]["vae"]
    cfg = batch_config(tmp_path, server.url, ["a"])
    write_workflow(tmp_path / "txt2img.json", wf)
    err = error_of(cfg)
    assert err.message.startswith("ComfyUI rejected the workflow: Prompt outputs failed validation")
    assert "node 8 (VAEDecode): Required input is missing vae" in err.message


def test_unknown_node_class_rejected_by_the_server(tmp_path, server):
    wf = json.loads(json.dumps(TXT2IMG))
    wf["7"]["class_type"] = "MyCustomEncode"
    cfg = batch_config(tmp_path, server.url, ["a"])
    write_workflow(tmp_path / "txt2img.json", wf)
    err = error_of(cfg)
    assert "Cannot execute because node MyCustomEncode does not exist" in err.message


def test_execution_error_in_the_history(tmp_path, server):
    server.fail_class = "VAEDecode"
    err = error_of(batch_config(tmp_path, server.url, ["a"]))
    assert (
        "failed running the workflow at node 8 (VAEDecode): RuntimeError: VAEDecode failed on purpose"
        in err.message
    )
    assert "traceback" in err.hint


def test_execution_error_seen_by_polling_too(tmp_path):
    srv = ComfyServer(tmp_path / "comfy", ws=False).start()
    srv.fail_class = "ImageInvert"
    try:
        err = error_of(full_config(tmp_path, srv.url))
    finally:
        srv.stop()
    assert "node 2 (ImageInvert)" in err.message


def test_missing_output(tmp_path, server):
    server.drop_outputs = True
    err = error_of(batch_config(tmp_path, server.url, ["a"]))
    assert "node(s) 9 produced no images" in err.message and err.where == "collect.output_node"


def test_non_image_download(tmp_path, server):
    server.non_image = True
    err = error_of(batch_config(tmp_path, server.url, ["a"]))
    assert "it is not an image" in err.message and "text/html" in err.message
    assert not images_in(tmp_path / "data" / "char")


def test_output_folder_that_is_a_file(tmp_path, server):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "char").write_text("not a folder")
    err = error_of(batch_config(tmp_path, server.url, ["a"]))
    assert "is a file" in err.message and err.where == "collect.output_dir"


def test_disk_full_keeps_what_was_downloaded(tmp_path, server, monkeypatch):
    cfg = batch_config(tmp_path, server.url, ["a", "b"])
    real = store_mod.atomic_write_bytes
    writes = []

    def full_disk(path, data):
        writes.append(path)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", full_disk)
    err = error_of(cfg)
    assert "No space left on device" in err.message and "free disk space" in err.hint
    folder = tmp_path / "data" / "char"
    assert len(images_in(folder)) == 1  # the first image stays
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(store_mod, "atomic_write_bytes", real)
    summary, _ = collect(cfg)
    # the second prompt's result is taken from the server's history, not generated again
    assert (summary.skipped, summary.submitted, len(server.posted)) == (1, 0, 2)
    assert len(images_in(folder)) == 2


def test_timeout(tmp_path, server):
    server.exec_seconds = 3.0
    err = error_of(batch_config(tmp_path, server.url, ["a"], timeout=0.5))
    assert "did not finish prompt" in err.message and "within 0.5 s" in err.message
    assert "collect.timeout" in err.hint


def test_mode_errors_say_which_keys(tmp_path, server):
    err = error_of(batch_config(tmp_path, server.url, ["a"], output_prefix="lora"))
    assert "both set" in err.message
    err = error_of(batch_config(tmp_path, server.url, ["a"], seed_node=""))
    assert "per-batch mode needs collect.seed_node" in err.message
    err = error_of(full_config(tmp_path, server.url, reference_image=""))
    assert "collect.reference_image is empty" in err.message


def test_bad_prompts_file(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["ok", {"prompt": "x", "count": 0}])
    err = error_of(cfg)
    assert "entry 2 is not a prompt" in err.message and err.where == "collect.prompts"


def test_bad_environment_override(tmp_path, server):
    with pytest.raises(ConfigError) as info:
        batch_config(tmp_path, server.url, ["a"], env={"GLOBAL_SEED": "abc"})
    assert info.value.where in (
        "environment GLOBAL_SEED: collect.seed",
        "environment GLOBAL_SEED: train.seed",
    )
    # without the opt-in the variable changes nothing
    cfg = load_config_text('name = "b"\n[collect]\nseed = 3\n', env={"GLOBAL_SEED": "abc"})
    assert cfg.collect.seed == 3 and not cfg.env_values[0].applied


def test_pipeline_config_checks():
    with pytest.raises(ConfigError) as info:
        load_config_text('name = "x"\npipeline = ["collect", "trian"]')
    assert 'unknown step "trian"' in info.value.message and '"train"' in info.value.hint
    with pytest.raises(ConfigError) as info:
        load_config_text('name = "x"\npipeline = ["caption", "train"]')
    assert "caption_auto.tagger is empty" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config_text('name = "x"\npipeline = ["collect"]')
    assert "collect.workflow is empty" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config_text(
            'name = "x"\nmode = "ileco"\npipeline = ["collect", "train"]\n[ileco]\noriginal_prompt = "a"\n'
        )
    assert 'mode "ileco"' in info.value.message


def test_img2img_workflow_constant_is_api_format():
    # The test workflows are what "Save (API Format)" writes: id -> {class_type, inputs}.
    for wf in (IMG2IMG, TXT2IMG):
        assert all(set(n) >= {"class_type", "inputs"} for n in wf.values())


def test_check_reports_collect_problems_before_any_image_exists(tmp_path):
    from engine.check import check

    write_workflow(tmp_path / "w.json", IMG2IMG)
    cfg = load_config_text(
        'name = "p"\npipeline = ["collect", "train"]\n[collect]\nworkflow = "w.json"\noutput_prefix = "nope"\n',
        workspace=tmp_path,
    )
    report = check(cfg)
    assert any("no SaveImage node has a filename_prefix starting with it" in p for p in report.problems)
    assert any("filled by the collect step" in w for w in report.warnings)
    assert not report.trainable


def test_pipeline_fails_with_the_step_reason_and_a_new_run_keeps_the_collected(tmp_path, server):
    import io

    from engine import protocol
    from engine.pipeline import PipelineRun

    cfg = batch_config(tmp_path, server.url, ["a", "b"])
    server.fail_class = "VAEDecode"
    out = io.StringIO()
    code = PipelineRun(cfg, events=protocol.EventWriter(out)).execute()
    finished = [protocol.decode(line) for line in out.getvalue().splitlines()][-1]
    assert code == 1 and finished["type"] == "run_finished" and finished["status"] == "failed"
    assert "VAEDecode failed on purpose" in finished["error"]["message"]
    assert finished["error"]["where"].startswith("collect step: ")
    log = (tmp_path / "runs" / "b" / "engine.log").read_text()
    assert "per-batch mode" in log and "VAEDecode failed on purpose" in log

    server.fail_class = None
    out = io.StringIO()
    assert PipelineRun(cfg, events=protocol.EventWriter(out)).execute() == 0
    events = [protocol.decode(line) for line in out.getvalue().splitlines()]
    assert events[-1]["status"] == "done"
    assert [e["step"] for e in events if e["type"] == "phase" and e["name"] == "pipeline"] == ["collect", ""]
    assert len(images_in(tmp_path / "data" / "char")) == 2
    # the failed prompt is in the history as an error: it is submitted again, "b" once
    assert len(server.posted) == 3
