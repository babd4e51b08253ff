"""One collect from start to end: check, upload, submit, follow, download, record; `phase` events.

Events (docs/protocol.md `phase`): name "collect", done = finished submissions, total = all submissions,
plus what ComfyUI reports while one runs: `queue_remaining`, `node` and `node_class` (the node
executing), `value`/`max` (sampler steps), `images` (files kept so far), `mode`. Log lines say the
mode chosen, overrides from the environment and every submission's result.

A stop (`should_stop()` true, e.g. Ctrl+C or the queue's stop) ends it between or during
submissions with `Stopped`; everything downloaded stays and is recorded, and the next collect (or
`resume` of the run) continues with the submissions that did not finish.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine import protocol
from engine.collect import settings as settings_mod
from engine.collect import workflow as wf
from engine.collect.client import ComfyClient
from engine.collect.store import ImageStore, Record
from engine.collect.watch import Stopped, open_socket, wait_for
from engine.errors import LoratuiError

__all__ = ["CollectSummary", "Stopped", "run_collect", "check_node_map"]


@dataclass
class CollectSummary:
    mode: str
    submissions: int  # planned in all
    submitted: int  # sent this time
    skipped: int  # already finished before
    downloaded: int  # files downloaded this time
    new: int  # of which were new content
    folder: str


def check_node_map(workflow: dict, s: settings_mod.CollectSettings) -> list[str]:
    """Check the mapped nodes against the workflow; the output node ids whose images are kept."""
    if s.image_loader_node:
        wf.check_loader(workflow, s.image_loader_node)
    if s.mode == settings_mod.BATCH:
        wf.check_prompt_node(workflow, s.positive_prompt_node)
        wf.check_seed_node(workflow, s.seed_node)
        wf.check_output_node(workflow, s.output_node)
        return [s.output_node]
    return wf.prefix_outputs(workflow, s.output_prefix)


def _sleep_unless_stopped(seconds: float, should_stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if should_stop():
            raise Stopped()
        time.sleep(min(0.1, left))


def run_collect(
    cfg,
    emit: Callable[[dict], None],
    *,
    run: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CollectSummary:
    """Collect the images `cfg.collect` describes into its output folder. Raises LoratuiError for
    anything the user has to fix, Stopped when asked to stop."""
    should_stop = should_stop or (lambda: False)
    s = settings_mod.resolve(cfg)

    def log(level: str, message: str) -> None:
        emit(protocol.log(message, level=level, run=run))

    for text in s.overrides:
        log("info", f"collect: {text}")
    workflow = wf.load_workflow(s.workflow)
    outputs = check_node_map(workflow, s)
    ref_digest = hashlib.sha256(s.reference_image.read_bytes()).hexdigest()[:16] if s.reference_image else ""
    jobs = settings_mod.plan_jobs(s, workflow, wf.digest(workflow), ref_digest)
    store = ImageStore(s.output_dir, caption=s.caption, caption_extension=s.caption_extension)
    store.prepare()
    record = Record(s.record)
    todo = [j for j in jobs if not record.done(j.key, s.output_dir)]
    mode_keys = (
        "output_prefix" if s.mode == settings_mod.FULL else "positive_prompt_node, seed_node, output_node"
    )
    log(
        "info",
        f"collect: {s.mode} mode ({mode_keys} set): {len(jobs)} submission(s) to {s.endpoint}, "
        f"images into {s.output_dir}"
        + (f"; {len(jobs) - len(todo)} already done" if len(todo) < len(jobs) else ""),
    )
    summary = CollectSummary(s.mode, len(jobs), 0, len(jobs) - len(todo), 0, 0, str(s.output_dir))
    done = len(jobs) - len(todo)
    state = {"images": store.existing()}

    def phase(**extra) -> None:
        state.update(extra)
        emit(protocol.phase(run=run, name="collect", done=done, total=len(jobs), mode=s.mode, **state))

    phase()
    if not todo:
        log("info", f"collect: all {len(jobs)} submission(s) were collected before; nothing to do")
        return summary

    client = ComfyClient(s.endpoint, retries=s.retries)
    ws = None
    try:
        queue = client.queue_info()
        phase(queue_remaining=(queue.get("exec_info") or {}).get("queue_remaining"))
        image_name = None
        if s.reference_image is not None:
            upload_as = f"loratui-{ref_digest}{s.reference_image.suffix.lower() or '.png'}"
            image_name = client.upload_image(s.reference_image, upload_as)
            log("info", f"collect: uploaded {s.reference_image.name} as {image_name!r}")
        ws = open_socket(client, log)

        def on_progress(info: dict) -> None:
            node = info.get("node")
            if node:
                info["node_class"] = workflow.get(node, {}).get("class_type", "")
                if "value" not in info:
                    info.update(value=None, max=None)
            phase(**info)

        for n, job in enumerate(todo):
            if n and s.delay > 0:
                _sleep_unless_stopped(s.delay, should_stop)
            if should_stop():
                raise Stopped()
            prompt = wf.inject(
                workflow,
                loader_node=s.image_loader_node,
                image_name=image_name,
                prompt_node=s.positive_prompt_node,
                prompt=job.prompt,
                seed=job.seed,
            )
            prompt_id = _still_known(client, record.pending(job.key))
            if prompt_id:
                log(
                    "info",
                    f"collect: submission {job.index + 1} was sent before ({prompt_id}): taking its result",
                )
            else:
                prompt_id = client.queue_prompt(prompt)
                record.mark_pending(job.key, prompt_id)
                summary.submitted += 1
            phase(submission=job.index + 1, node=None, node_class="", value=None, max=None)
            entry = wait_for(
                client,
                prompt_id,
                ws,
                timeout=s.timeout,
                workflow=workflow,
                on_progress=on_progress,
                should_stop=should_stop,
            )
            files = _download(client, store, entry, outputs, job, prompt_id, summary, s)
            record.mark(
                job.key,
                {
                    "prompt_id": prompt_id,
                    "files": files,
                    "prompt": job.prompt,
                    "seed": job.seed,
                    "finished": time.time(),
                },
            )
            done += 1
            phase(images=store.existing(), node=None, node_class="", value=None, max=None)
            log(
                "info",
                f"collect: submission {job.index + 1}/{len(jobs)} done ({prompt_id}): {len(files)} image(s)",
            )
    finally:
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass
        client.close()
    log(
        "info",
        f"collect: {summary.submitted} submission(s), {summary.downloaded} image(s) downloaded, "
        f"{summary.new} new, in {s.output_dir}",
    )
    return summary


def _still_known(client: ComfyClient, prompt_id: str | None) -> str | None:
    """`prompt_id` when the server still has it (finished well in its history, or queued), else None:
    a restarted server forgot it, or it failed (the error was reported then): submit it again."""
    if not prompt_id:
        return None
    entry = client.history(prompt_id)
    if entry is not None:
        return None if (entry.get("status") or {}).get("status_str") == "error" else prompt_id
    return prompt_id if prompt_id in client.queued() else None


def _download(client, store, entry, outputs, job, prompt_id, summary, s) -> list[str]:
    """Download the images of the mapped output nodes of one finished prompt; their local names."""
    node_outputs = entry.get("outputs") or {}
    files: list[str] = []
    for node_id in outputs:
        images = (node_outputs.get(node_id) or {}).get("images") or []
        for image in images:
            if not isinstance(image, dict):
                continue
            data, content_type = client.view(image)
            meta = {
                "prompt": job.prompt,
                "seed": job.seed,
                "prompt_id": prompt_id,
                "node": node_id,
                "mode": s.mode,
            }
            path, new = store.save(data, source=image, content_type=content_type, meta=meta)
            summary.downloaded += 1
            summary.new += int(new)
            files.append(path.name)
    if not files:
        where = ", ".join(outputs)
        raise LoratuiError(
            f"ComfyUI finished prompt {prompt_id} but node(s) {where} produced no images",
            hint="is the mapped output node connected, and does it save images (SaveImage)? "
            f"nodes with outputs in this run: {', '.join(sorted(node_outputs)) or 'none'}",
            where="collect.output_node" if s.mode == settings_mod.BATCH else "collect.output_prefix",
        )
    return files
