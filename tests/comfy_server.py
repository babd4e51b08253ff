"""A local ComfyUI server for tests: aiohttp (what ComfyUI itself is built on), real HTTP + websocket.

Routes, JSON shapes and websocket messages follow ComfyUI's server.py (PromptServer), execution.py
(`validate_prompt`, `PromptExecutor.add_message`, `handle_execution_error`) and main.py (the history
entry's `status`): GET/POST /prompt, GET /history/{id}, GET /view, POST /upload/image,
GET /object_info/{class}, GET /ws?clientId=. Prompts run one after another in a worker task; a
handful of node classes really compute (LoadImage, ImageInvert, ImageScale, CLIPTextEncode,
KSampler, VAEDecode, SaveImage, PreviewImage), so outputs depend on the seed, the prompt text and the
uploaded image like a real workflow's do.

Knobs for error cases: `fail_class` (execution_error at that class), `hostile` (history file names
with ../, served anyway), `non_image` (/view answers text), `drop_outputs`, `ws` (False: /ws is 404),
`exec_seconds` (time each prompt takes). Also GET /queue ({"queue_running", "queue_pending"}). `posted` records every accepted POST /prompt with its time.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import threading
import time
import uuid
from pathlib import Path

from aiohttp import WSMsgType, web
from PIL import Image, ImageOps

NODE_INFO = {
    # class: (required inputs, RETURN_TYPES, OUTPUT_NODE)
    "LoadImage": ({"image": [[], {"image_upload": True}]}, ["IMAGE", "MASK"], False),
    "ImageInvert": ({"image": ["IMAGE"]}, ["IMAGE"], False),
    "ImageScale": (
        {
            "image": ["IMAGE"],
            "upscale_method": [["nearest-exact", "bilinear"]],
            "width": ["INT", {"default": 512}],
            "height": ["INT", {"default": 512}],
            "crop": [["disabled", "center"]],
        },
        ["IMAGE"],
        False,
    ),
    "CheckpointLoaderSimple": ({"ckpt_name": [["model.safetensors"]]}, ["MODEL", "CLIP", "VAE"], False),
    "CLIPTextEncode": ({"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}, ["CONDITIONING"], False),
    "EmptyLatentImage": (
        {"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}]},
        ["LATENT"],
        False,
    ),
    "KSampler": (
        {
            "model": ["MODEL"],
            "seed": ["INT", {"default": 0}],
            "steps": ["INT", {"default": 20}],
            "cfg": ["FLOAT", {}],
            "sampler_name": [["euler"]],
            "scheduler": [["normal"]],
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "latent_image": ["LATENT"],
            "denoise": ["FLOAT", {}],
        },
        ["LATENT"],
        False,
    ),
    "VAEDecode": ({"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"], False),
    "SaveImage": ({"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [], True),
    "PreviewImage": ({"images": ["IMAGE"]}, [], True),
}


def node_info(cls: str) -> dict:
    """ComfyUI server.py `node_info` shape."""
    required, outputs, output_node = NODE_INFO[cls]
    return {
        "input": {"required": required},
        "input_order": {"required": list(required)},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "name": cls,
        "display_name": cls,
        "description": "",
        "python_module": "nodes",
        "category": "test",
        "output_node": output_node,
    }


class ExecutionFailed(Exception):
    def __init__(self, node_id: str, message: str):
        super().__init__(message)
        self.node_id = node_id


class ComfyServer:
    def __init__(self, root: Path, *, ws: bool = True):
        self.root = Path(root)
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        for d in (self.input_dir, self.output_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.ws_enabled = ws
        self.fail_class: str | None = None
        self.hostile = False
        self.non_image = False
        self.drop_outputs = False
        self.exec_seconds = 0.0
        self.posted: list[tuple[float, dict]] = []  # (time, prompt) of every accepted submission
        self.views = 0
        self.history: dict[str, dict] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.number = 0
        self.counter = 0
        self.running: tuple | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- life -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ComfyServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "test ComfyUI server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self.queue: asyncio.Queue = asyncio.Queue()
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/ws", self.websocket),
                web.get("/prompt", self.get_prompt),
                web.post("/prompt", self.post_prompt),
                web.get("/history/{prompt_id}", self.get_history),
                web.get("/queue", self.get_queue),
                web.get("/view", self.view),
                web.post("/upload/image", self.upload),
                web.get("/object_info/{node_class}", self.object_info),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        worker = loop.create_task(self._worker())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            worker.cancel()
            loop.run_until_complete(asyncio.gather(worker, return_exceptions=True))
            for ws in list(self.sockets.values()):
                loop.run_until_complete(ws.close())
            loop.run_until_complete(runner.cleanup())
            loop.close()

    # --- messages (server.py send_json: {"type", "data"}) ---------------------------------------

    async def send(self, event: str, data: dict, sid: str | None = None) -> None:
        targets = [self.sockets[sid]] if sid in self.sockets else ([] if sid else list(self.sockets.values()))
        for ws in targets:
            try:
                await ws.send_json({"type": event, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.qsize()}}

    async def websocket(self, request: web.Request):
        if not self.ws_enabled:
            return web.Response(status=404)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.sockets[sid] = ws
        try:
            await self.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.pop(sid, None)
        return ws

    # --- routes ---------------------------------------------------------------------------------

    async def get_prompt(self, request):
        return web.json_response(self.queue_info())

    def validate(self, prompt: dict) -> tuple[dict | None, dict]:
        """(error, node_errors) like execution.py validate_prompt, for the cases tests need."""
        for node_id, node in prompt.items():
            cls = node.get("class_type") if isinstance(node, dict) else None
            if cls not in NODE_INFO:
                return {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {cls} does not exist.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                }, {}
        outputs = [k for k, n in prompt.items() if NODE_INFO[n["class_type"]][2]]
        if not outputs:
            return {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }, {}
        node_errors = {}
        for node_id, node in prompt.items():
            errors = []
            for name in NODE_INFO[node["class_type"]][0]:
                if name not in node.get("inputs", {}):
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
            if node["class_type"] == "LoadImage" and isinstance(node["inputs"].get("image"), str):
                if not (self.input_dir / node["inputs"]["image"]).is_file():
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": f"image - Invalid image file: {node['inputs']['image']}",
                            "extra_info": {},
                        }
                    )
            if errors:
                node_errors[node_id] = {
                    "errors": errors,
                    "dependent_outputs": outputs,
                    "class_type": node["class_type"],
                }
        if node_errors:
            return {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }, node_errors
        return None, {}

    async def post_prompt(self, request):
        data = await request.json()
        number = self.number
        self.number += 1
        if "prompt" not in data:
            return web.json_response({"error": "no prompt", "node_errors": []}, status=400)
        prompt = data["prompt"]
        error, node_errors = self.validate(prompt)
        if error is not None:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(uuid.uuid4())
        self.posted.append((time.monotonic(), prompt))
        await self.queue.put((number, prompt_id, prompt, {"client_id": data.get("client_id")}))
        await self.send("status", {"status": self.queue_info()})
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def get_queue(self, request):
        pending = [list(item) for item in self.queue._queue]  # noqa: SLF001 - the test server's own queue
        running = [list(self.running)] if self.running else []
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def get_history(self, request):
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def view(self, request):
        self.views += 1
        query = request.rel_url.query
        filename = query.get("filename", "")
        if self.non_image:
            return web.Response(text="<html>not an image</html>", content_type="text/html")
        base = {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(
            query.get("type", "output")
        )
        if base is None:
            return web.Response(status=400)
        if self.hostile:
            # A hostile server: it names files with ../ and serves them anyway (real ComfyUI refuses).
            file = base / os.path.basename(filename)
        else:
            if not filename or filename[0] == "/" or ".." in filename:
                return web.Response(status=400)
            folder = base / query.get("subfolder", "")
            if os.path.commonpath((os.path.abspath(folder), str(base))) != str(base):
                return web.Response(status=403)
            file = folder / os.path.basename(filename)
        if not file.is_file():
            return web.Response(status=404)
        return web.FileResponse(file, headers={"Content-Disposition": f'filename="{file.name}"'})

    async def upload(self, request):
        post = await request.post()
        image = post.get("image")
        if image is None or not getattr(image, "filename", ""):
            return web.Response(status=400)
        kind = post.get("type", "input")
        folder = {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}[kind]
        subfolder = post.get("subfolder", "")
        data = image.file.read()
        filename = image.filename
        path = folder / subfolder / filename
        split = os.path.splitext(filename)
        i = 1
        while path.exists():
            if hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest():
                break  # server.py compare_image_hash: the same file is not saved twice
            filename = f"{split[0]} ({i}){split[1]}"
            path = folder / subfolder / filename
            i += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def object_info(self, request):
        cls = request.match_info["node_class"]
        return web.json_response({cls: node_info(cls)} if cls in NODE_INFO else {})

    # --- execution (execution.py PromptExecutor, main.py prompt_worker) ----------------------------

    async def _worker(self) -> None:
        while True:
            number, prompt_id, prompt, extra = await self.queue.get()
            self.running = (number, prompt_id, prompt, extra, [])
            sid = extra.get("client_id")
            messages: list = []

            async def add(event: str, data: dict, messages=messages, sid=sid) -> None:
                data = {**data, "timestamp": int(time.time() * 1000)}
                messages.append([event, data])
                await self.send(event, data, sid)

            await add("execution_start", {"prompt_id": prompt_id})
            await add("execution_cached", {"nodes": [], "prompt_id": prompt_id})
            outputs: dict = {}
            status = "success"
            try:
                outputs = await self._execute(prompt, prompt_id, sid)
                await add("execution_success", {"prompt_id": prompt_id})
            except ExecutionFailed as exc:
                status = "error"
                await add(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": exc.node_id,
                        "node_type": prompt[exc.node_id]["class_type"],
                        "executed": [],
                        "exception_message": str(exc),
                        "exception_type": "RuntimeError",
                        "traceback": ["Traceback (most recent call last):\n", f"RuntimeError: {exc}\n"],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
            if self.drop_outputs:
                outputs = {}
            self.history[prompt_id] = {
                "prompt": [number, prompt_id, prompt, extra, [k for k in outputs]],
                "outputs": outputs,
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": {k: {"node_id": k, "display_node": k} for k in outputs},
            }
            self.running = None
            await self.send("executing", {"node": None, "prompt_id": prompt_id}, sid)
            await self.send("status", {"status": self.queue_info()})

    async def _execute(self, prompt: dict, prompt_id: str, sid: str | None) -> dict:
        results: dict[str, tuple] = {}
        ui: dict[str, dict] = {}
        start = time.monotonic()

        async def value(node_id: str) -> tuple:
            if node_id in results:
                return results[node_id]
            node = prompt[node_id]
            cls = node["class_type"]
            inputs = {}
            for name, v in node["inputs"].items():
                if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                    inputs[name] = (await value(v[0]))[v[1]]
                else:
                    inputs[name] = v
            await self.send(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, sid
            )
            if cls == self.fail_class:
                raise ExecutionFailed(node_id, f"{cls} failed on purpose")
            results[node_id] = await self._run_node(node_id, cls, inputs, prompt_id, sid, ui)
            if node_id in ui:
                await self.send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui[node_id], "prompt_id": prompt_id},
                    sid,
                )
            return results[node_id]

        for node_id, node in prompt.items():
            if NODE_INFO[node["class_type"]][2]:
                await value(node_id)
        left = self.exec_seconds - (time.monotonic() - start)
        if left > 0:
            await asyncio.sleep(left)
        return ui

    async def _run_node(self, node_id, cls, inputs, prompt_id, sid, ui) -> tuple:
        if cls == "LoadImage":
            with Image.open(self.input_dir / inputs["image"]) as img:
                return (img.convert("RGB"), None)
        if cls == "ImageInvert":
            return (ImageOps.invert(inputs["image"]),)
        if cls == "ImageScale":
            return (inputs["image"].resize((int(inputs["width"]), int(inputs["height"]))),)
        if cls == "CheckpointLoaderSimple":
            return ("model", "clip", "vae")
        if cls == "CLIPTextEncode":
            return (inputs["text"],)
        if cls == "EmptyLatentImage":
            return ((int(inputs["width"]), int(inputs["height"])),)
        if cls == "KSampler":
            steps = int(inputs["steps"])
            for i in range(steps):
                await self.send(
                    "progress", {"value": i + 1, "max": steps, "prompt_id": prompt_id, "node": node_id}, sid
                )
            return ((inputs["seed"], inputs["positive"], inputs["latent_image"]),)
        if cls == "VAEDecode":
            seed, text, (w, h) = inputs["samples"]
            digest = hashlib.sha256(f"{seed}|{text}".encode()).digest()
            img = Image.new("RGB", (w, h), tuple(digest[:3]))
            img.putpixel((0, 0), tuple(digest[3:6]))
            return (img,)
        if cls in ("SaveImage", "PreviewImage"):
            saving = cls == "SaveImage"
            folder = self.output_dir if saving else self.temp_dir
            prefix = inputs.get("filename_prefix", "ComfyUI") if saving else "ComfyUI_temp"
            sub, _, stem = prefix.rpartition("/")
            self.counter += 1
            name = f"{stem}_{self.counter:05}_.png"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            inputs["images"].save(buf, format="PNG")
            (folder / sub / name).write_bytes(buf.getvalue())
            record = {"filename": name, "subfolder": sub, "type": "output" if saving else "temp"}
            if self.hostile:
                record = {"filename": f"../../../{name}", "subfolder": "../../..", "type": record["type"]}
            ui[node_id] = {"images": [record]}
            return ()
        raise AssertionError(cls)


def write_workflow(path: Path, nodes: dict) -> Path:
    path.write_text(json.dumps(nodes, indent=1), encoding="utf-8")
    return path


# An image-to-image workflow that needs no model: LoadImage -> ImageInvert -> ImageScale -> SaveImage.
IMG2IMG = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load Image"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["2", 0],
            "upscale_method": "nearest-exact",
            "width": 24,
            "height": 16,
            "crop": "disabled",
        },
    },
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "lora/ref"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "other"}},
}

# A text-to-image workflow with two samplers (base + refiner), per-batch mode maps 6 / 3 / 9.
TXT2IMG = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "placeholder", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["4", 0],
            "seed": 5,
            "steps": 3,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
            "denoise": 1.0,
        },
    },
    "10": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["4", 0],
            "seed": 77,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["3", 0],
            "denoise": 0.3,
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "batch"}},
}
