"""Following one prompt to its end: ComfyUI's websocket for progress, the history endpoint as fallback.

Websocket messages (`{"type", "data"}` JSON text frames from ComfyUI server.py `send_json`; binary
frames are previews and are skipped), as execution.py and main.py send them:

- status {"status": {"exec_info": {"queue_remaining"}}, "sid"?}
- execution_start {"prompt_id"}, execution_cached {"nodes", "prompt_id"}
- executing {"node", "display_node", "prompt_id"} (node null = the prompt is done, older servers)
- progress {"value", "max", "prompt_id", "node"} (sampler steps)
- executed {"node", "output", "prompt_id"}
- execution_error {"prompt_id", "node_id", "node_type", "exception_message", "exception_type", ...}
- execution_success {"prompt_id"}, execution_interrupted {"prompt_id", "node_id", "node_type"}

When the websocket cannot be opened, GET /history/{id} is polled instead; either way the prompt's
result is read from the history, whose `status.status_str` is "success" or "error".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import websocket  # websocket-client

from engine.collect.client import ComfyClient
from engine.errors import LoratuiError

POLL_S = 0.5  # history polling without a websocket
WS_TICK_S = 0.5  # websocket read timeout: how often stop and the deadline are checked
SAFETY_POLL_S = 5.0  # with a websocket, still look at the history this often (a lost message)


class Stopped(Exception):
    """A stop was asked for (Ctrl+C, the queue's stop): what was downloaded stays."""


def open_socket(client: ComfyClient, log: Callable[[str, str], None]):
    """A websocket to the server, or None (then progress comes from polling the history)."""
    try:
        ws = websocket.create_connection(client.ws_url, timeout=5)
        ws.settimeout(WS_TICK_S)
        return ws
    except (OSError, websocket.WebSocketException) as exc:
        log("warning", f"ComfyUI websocket unavailable ({exc}): following prompts by polling /history")
        return None


def wait_for(
    client: ComfyClient,
    prompt_id: str,
    ws,
    *,
    timeout: float,
    workflow: dict,
    on_progress: Callable[[dict], None],
    should_stop: Callable[[], bool],
) -> dict:
    """The finished history entry of `prompt_id`; raises LoratuiError on an execution error or timeout,
    Stopped when `should_stop()` turns true."""
    deadline = time.monotonic() + timeout
    next_poll = time.monotonic() + (SAFETY_POLL_S if ws is not None else 0.0)
    while True:
        if should_stop():
            raise Stopped()
        now = time.monotonic()
        if now > deadline:
            raise LoratuiError(
                f"ComfyUI did not finish prompt {prompt_id} within {timeout:g} s",
                hint="raise collect.timeout, or look at the ComfyUI console (a stuck or very long workflow?)",
                where=client.url,
            )
        done = False
        if ws is not None:
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                frame = None
            except (OSError, websocket.WebSocketException):
                ws = None  # the socket broke: poll from now on
                frame = None
            if isinstance(frame, str):
                done = _on_message(frame, prompt_id, on_progress)
        else:
            time.sleep(min(POLL_S, max(0.0, deadline - now)))
        if done or time.monotonic() >= next_poll:
            entry = client.history(prompt_id)
            if entry is not None and _finished(entry):
                return check_entry(entry, prompt_id, workflow)
            if done:
                # The socket said done before the history was written: poll it briefly.
                next_poll = time.monotonic() + 0.1
            else:
                next_poll = time.monotonic() + (SAFETY_POLL_S if ws is not None else POLL_S)


def _finished(entry: dict) -> bool:
    status = entry.get("status")
    if not isinstance(status, dict):
        return "outputs" in entry  # very old servers wrote no status
    return bool(status.get("completed")) or status.get("status_str") in ("success", "error")


def _on_message(frame: str, prompt_id: str, on_progress: Callable[[dict], None]) -> bool:
    """Report one websocket message; True when it says our prompt ended."""
    try:
        message = json.loads(frame)
    except ValueError:
        return False
    if not isinstance(message, dict):
        return False
    kind, data = message.get("type"), message.get("data") or {}
    if not isinstance(data, dict):
        return False
    if kind == "status":
        info = (
            ((data.get("status") or {}).get("exec_info") or {})
            if isinstance(data.get("status"), dict)
            else {}
        )
        if "queue_remaining" in info:
            on_progress({"queue_remaining": info["queue_remaining"]})
        return False
    if data.get("prompt_id") not in (None, prompt_id):
        return False  # another client's prompt
    if kind == "executing":
        if data.get("node") is None:
            return data.get("prompt_id") == prompt_id
        on_progress({"node": str(data["node"])})
    elif kind == "progress":
        on_progress({"node": str(data.get("node") or ""), "value": data.get("value"), "max": data.get("max")})
    elif kind == "execution_cached":
        on_progress({"cached": len(data.get("nodes") or [])})
    elif kind in ("execution_success", "execution_error", "execution_interrupted"):
        return data.get("prompt_id") == prompt_id
    return False


def check_entry(entry: dict, prompt_id: str, workflow: dict) -> dict:
    """The history entry when the prompt succeeded; its execution error as a LoratuiError otherwise."""
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return entry
    for event, data in status.get("messages") or []:
        if event == "execution_error" and isinstance(data, dict):
            node = str(data.get("node_id", "?"))
            cls = data.get("node_type") or workflow.get(node, {}).get("class_type", "?")
            raise LoratuiError(
                f"ComfyUI failed running the workflow at node {node} ({cls}): "
                f"{data.get('exception_type', 'error')}: {str(data.get('exception_message', '')).strip()}",
                hint="the ComfyUI console has the traceback; fix the workflow or its inputs and run collect again "
                "(images already downloaded are kept)",
                where=f"prompt {prompt_id}",
            )
        if event == "execution_interrupted" and isinstance(data, dict):
            raise LoratuiError(
                f"the prompt {prompt_id} was interrupted on the ComfyUI server (node {data.get('node_id', '?')})",
                hint="someone pressed Cancel in ComfyUI? run collect again to continue",
                where=f"prompt {prompt_id}",
            )
    raise LoratuiError(
        f"ComfyUI reports an error for prompt {prompt_id} without details",
        hint="see the ComfyUI console",
        where=f"prompt {prompt_id}",
    )
