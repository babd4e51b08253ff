"""The "Test connection" check: is the server ComfyUI, are the mapped nodes there, does it know them.

Returns a report instead of raising, so the TUI can show every line at once:
{"ok": bool, "endpoint", "mode", "lines": [{"ok": bool, "text"}], "nodes": [{"key", "id",
"class_type", "object_info": {"input_required": [...], "output": [...], "display_name"}}]}.
Nothing is submitted or uploaded.
"""

from __future__ import annotations

from engine.collect import settings as settings_mod
from engine.collect import workflow as wf
from engine.collect.client import ComfyClient
from engine.errors import LoratuiError

NODE_KEYS = ("image_loader_node", "positive_prompt_node", "seed_node", "output_node")


def probe(cfg) -> dict:
    report: dict = {"ok": True, "endpoint": cfg.collect.endpoint, "mode": "", "lines": [], "nodes": []}

    def line(ok: bool, text: str) -> None:
        report["lines"].append({"ok": ok, "text": text})
        report["ok"] = report["ok"] and ok

    try:
        s = settings_mod.resolve(cfg)
    except LoratuiError as exc:
        line(False, f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
        return report
    report["endpoint"], report["mode"] = s.endpoint, s.mode
    workflow = None
    try:
        workflow = wf.load_workflow(s.workflow)
        line(True, f"workflow {s.workflow.name}: {len(workflow)} nodes, {s.mode} mode")
    except LoratuiError as exc:
        line(False, f"{exc.message} ({exc.hint})")
    client = ComfyClient(s.endpoint, retries=0)
    try:
        info = client.queue_info()
        queue = (info.get("exec_info") or {}).get("queue_remaining", "?")
        line(True, f"ComfyUI answers at {client.url} (queue: {queue} waiting)")
    except LoratuiError as exc:
        line(False, f"{exc.message} ({exc.hint})")
        client.close()
        return report
    try:
        if workflow is None:
            return report
        ids = [(k, str(getattr(cfg.collect, k))) for k in NODE_KEYS if getattr(cfg.collect, k)]
        if s.mode == settings_mod.FULL:
            try:
                ids += [("output_prefix", i) for i in wf.prefix_outputs(workflow, s.output_prefix)]
            except LoratuiError as exc:
                line(False, f"{exc.message} ({exc.hint})")
        try:
            from engine.collect.run import check_node_map

            check_node_map(workflow, s)
        except LoratuiError as exc:
            line(False, f"{exc.message} ({exc.hint})")
        for key, node_id in ids:
            node = workflow.get(node_id)
            if node is None:
                continue  # check_node_map said so
            cls = node["class_type"]
            info = client.object_info(cls)
            entry = {"key": key, "id": node_id, "class_type": cls, "object_info": None}
            if info is None:
                line(
                    False,
                    f"{key} = {node_id} ({cls}): the server has no node class {cls} (a missing custom node?)",
                )
            else:
                inputs = info.get("input") or {}
                entry["object_info"] = {
                    "display_name": info.get("display_name", cls),
                    "input_required": sorted((inputs.get("required") or {}).keys()),
                    "input_optional": sorted((inputs.get("optional") or {}).keys()),
                    "output": list(info.get("output") or []),
                    "output_node": bool(info.get("output_node")),
                }
                req = ", ".join(entry["object_info"]["input_required"]) or "none"
                line(
                    True, f'{key} = {node_id} ({cls}, "{entry["object_info"]["display_name"]}"): inputs {req}'
                )
            report["nodes"].append(entry)
    except LoratuiError as exc:
        line(False, f"{exc.message} ({exc.hint})")
    finally:
        client.close()
    return report


def preflight(cfg) -> list[str]:
    """What `check` says about [collect] without asking the server: settings, mode, workflow file,
    node map and prompts file. Problems as text; empty when the collect can start."""
    try:
        s = settings_mod.resolve(cfg)
        workflow = wf.load_workflow(s.workflow)
        from engine.collect.run import check_node_map

        check_node_map(workflow, s)
        if s.mode == settings_mod.BATCH:
            settings_mod.load_prompts(s.prompts)
    except LoratuiError as exc:
        return [f"{exc.where}: {exc.message} ({exc.hint})" if exc.where else exc.message]
    return []


def render(report: dict) -> str:
    """The report as terminal lines: ✓/✗ per check."""
    lines = [f"{'ok' if item['ok'] else 'FAIL'}  {item['text']}" for item in report["lines"]]
    lines.append("connection test passed" if report["ok"] else "connection test FAILED")
    return "\n".join(lines)
