"""ComfyUI's HTTP API through `requests`, with errors a user can act on.

Routes and JSON shapes as ComfyUI's server.py defines them (PromptServer routes):

- GET  /prompt                  -> {"exec_info": {"queue_remaining": n}} (used as the "is this ComfyUI" check)
- POST /prompt {"prompt", "client_id"} -> {"prompt_id", "number", "node_errors"}; 400 ->
  {"error": {"type", "message", "details", "extra_info"}, "node_errors": {id: {"errors": [...],
  "dependent_outputs", "class_type"}}}
- GET  /history/{prompt_id}     -> {prompt_id: {"prompt", "outputs": {node: {"images": [{"filename",
  "subfolder", "type"}]}}, "status": {"status_str", "completed", "messages": [[event, data], ...]}}}
  or {} while the prompt has not finished
- GET  /queue                   -> {"queue_running": [[number, prompt_id, prompt, extra, outputs]], "queue_pending": [...]}
- GET  /view?filename=&subfolder=&type= -> the file's bytes
- POST /upload/image (multipart: image, type, subfolder) -> {"name", "subfolder", "type"}
- GET  /object_info/{class}     -> {class: {"input", "output", "name", "display_name", ...}} or {}

Connection failures and 5xx answers are retried `retries` times (0.5 s, 1 s, 2 s ... apart); a 4xx
answer is never retried. Server-given names are only ever sent back to the server as query values.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from engine.errors import LoratuiError

REQUEST_TIMEOUT = 30.0  # seconds for one HTTP request (the prompt itself has collect.timeout)


def normalize_endpoint(endpoint: str) -> str:
    """`http://host:port` without a trailing slash; a bare `host:port` gets http://."""
    text = (endpoint or "").strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoratuiError(
            f"collect.endpoint {endpoint!r} is not an http(s) URL",
            hint="e.g. http://127.0.0.1:8188",
            where="collect.endpoint",
        )
    return text


def start_hint(url: str) -> str:
    parts = urlsplit(url)
    return (
        f"start ComfyUI with `python main.py --listen {parts.hostname} --port {parts.port or 80}` "
        "(--listen 0.0.0.0 to reach it from another machine), or set collect.endpoint (COMFYUI_ENDPOINT with --env-compat) "
        "to where it runs"
    )


class ComfyClient:
    """One ComfyUI server. `client_id` is the id the websocket and POST /prompt share."""

    def __init__(self, endpoint: str, *, retries: int = 2, client_id: str | None = None, sleep=time.sleep):
        self.url = normalize_endpoint(endpoint)
        self.retries = max(0, int(retries))
        self.client_id = client_id or uuid.uuid4().hex
        self.session = requests.Session()
        self._sleep = sleep

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.url.startswith("https") else "ws"
        return f"{scheme}{self.url[self.url.index(':') :]}/ws?clientId={self.client_id}"

    def close(self) -> None:
        self.session.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _request(self, method: str, route: str, **kwargs) -> requests.Response:
        url = self.url + route
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(0.5 * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
            except requests.ConnectionError as exc:
                last = exc
                continue
            except requests.Timeout as exc:
                last = exc
                continue
            if response.status_code >= 500:
                last = LoratuiError(
                    f"ComfyUI answered {response.status_code} to {method} {route}: {response.text[:300]}"
                )
                continue
            return response
        if isinstance(last, LoratuiError):
            raise LoratuiError(last.message, hint="see the ComfyUI console for the server's error", where=url)
        if isinstance(last, requests.Timeout):
            raise LoratuiError(
                f"ComfyUI at {self.url} did not answer {method} {route} within {REQUEST_TIMEOUT:.0f} s",
                hint="is the server busy or stuck? see its console",
                where=url,
            )
        raise LoratuiError(
            f"cannot connect to ComfyUI at {self.url} (connection refused or no such host)",
            hint=start_hint(self.url),
            where=url,
        )

    def _json(self, response: requests.Response, route: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise LoratuiError(
                f"{self.url}{route} did not answer JSON (HTTP {response.status_code}): is this a ComfyUI server?",
                hint=start_hint(self.url),
                where=self.url + route,
            ) from None

    def _not_comfy(self, route: str, status: int) -> LoratuiError:
        return LoratuiError(
            f"{self.url}{route} answered HTTP {status}: this is not a ComfyUI server, or the endpoint is wrong",
            hint=start_hint(self.url),
            where=self.url + route,
        )

    # --- routes ---------------------------------------------------------------------------------

    def queue_info(self) -> dict:
        """GET /prompt: {"exec_info": {"queue_remaining": n}}; also proves the server is ComfyUI."""
        response = self._request("GET", "/prompt")
        if response.status_code != 200:
            raise self._not_comfy("/prompt", response.status_code)
        data = self._json(response, "/prompt")
        if not isinstance(data, dict) or "exec_info" not in data:
            raise self._not_comfy("/prompt", response.status_code)
        return data

    def queue_prompt(self, workflow: dict) -> str:
        """POST /prompt; the prompt_id. A rejected workflow raises with ComfyUI's node_errors text."""
        response = self._request("POST", "/prompt", json={"prompt": workflow, "client_id": self.client_id})
        if response.status_code == 404:
            raise self._not_comfy("/prompt", 404)
        data = self._json(response, "/prompt")
        if response.status_code != 200 or not isinstance(data, dict) or "prompt_id" not in data:
            raise LoratuiError(
                f"ComfyUI rejected the workflow: {rejection_text(data, workflow)}",
                hint="fix the workflow in ComfyUI (missing models or custom nodes, bad inputs) and export it again",
                where="collect.workflow",
            )
        return str(data["prompt_id"])

    def queued(self) -> set[str]:
        """GET /queue: the prompt ids running or waiting ({"queue_running": [[number, id, ...]], "queue_pending": ...})."""
        response = self._request("GET", "/queue")
        if response.status_code != 200:
            raise self._not_comfy("/queue", response.status_code)
        data = self._json(response, "/queue")
        items = (
            [*(data.get("queue_running") or []), *(data.get("queue_pending") or [])]
            if isinstance(data, dict)
            else []
        )
        return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1}

    def history(self, prompt_id: str) -> dict | None:
        """GET /history/{id}: the prompt's history entry, or None while it has not finished."""
        return self._entry(f"/history/{prompt_id}", prompt_id)

    def view(self, image: dict) -> tuple[bytes, str]:
        """GET /view for one output record {filename, subfolder, type}: (bytes, content type)."""
        params = {
            "filename": str(image.get("filename", "")),
            "subfolder": str(image.get("subfolder", "")),
            "type": str(image.get("type", "output")),
        }
        response = self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise LoratuiError(
                f"ComfyUI could not send output {params['filename']!r} (HTTP {response.status_code})",
                hint="the file may have been deleted from ComfyUI's output folder; run collect again",
                where=self.url + "/view",
            )
        return response.content, response.headers.get("Content-Type", "")

    def upload_image(self, path: Path, name: str) -> str:
        """POST /upload/image; the name to put in a LoadImage node ("subfolder/name" when in one)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise LoratuiError(f"cannot read {path}: {exc}", where="collect.reference_image") from None
        response = self._request(
            "POST",
            "/upload/image",
            files={"image": (name, data, "application/octet-stream")},
            data={"type": "input"},
        )
        if response.status_code != 200:
            raise LoratuiError(
                f"ComfyUI refused the upload of {path} (HTTP {response.status_code}: {response.text[:200]})",
                hint="is it an image ComfyUI can read? is the server's input folder writable?",
                where="collect.reference_image",
            )
        answer = self._json(response, "/upload/image")
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise self._not_comfy("/upload/image", response.status_code)
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else answer["name"]

    def object_info(self, class_type: str) -> dict | None:
        """GET /object_info/{class}: the node class's description, or None when the server lacks it."""
        return self._entry(f"/object_info/{class_type}", class_type)

    def _entry(self, path: str, key: str) -> dict | None:
        """GET `path` (a JSON object keyed by `key`, as /history/{id} and /object_info/{class}
        answer): the object under `key`, or None when it is not there."""
        response = self._request("GET", path)
        if response.status_code != 200:
            raise self._not_comfy(path, response.status_code)
        data = self._json(response, path)
        entry = data.get(key) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None


def rejection_text(data: Any, workflow: dict) -> str:
    """ComfyUI's 400 answer as one readable text: the error, then each node's errors."""
    if not isinstance(data, dict):
        return str(data)[:300]
    parts = []
    error = data.get("error")
    if isinstance(error, dict):
        parts.append(" ".join(str(error.get(k) or "") for k in ("message", "details")).strip())
    elif error:
        parts.append(str(error))
    node_errors = data.get("node_errors") or {}
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            cls = (info or {}).get("class_type") or workflow.get(node_id, {}).get("class_type", "?")
            for err in (info or {}).get("errors", []):
                text = " ".join(str(err.get(k) or "") for k in ("message", "details")).strip()
                parts.append(f"node {node_id} ({cls}): {text}")
    return "; ".join(p for p in parts if p) or json.dumps(data)[:300]
