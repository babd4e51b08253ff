"""Where collected images land: content-hash names, atomic writes, de-duplication, the prompt beside.

A server-given filename or subfolder is never used as a local path (a hostile or buggy server could
answer `../../x`): each image is named `<first 16 hex of its sha256><ext>`, with the extension taken
from the decoded bytes (PNG, JPEG, WEBP), so the same picture downloaded twice is one file. Beside
each image:

- `<stem>.comfyui.json`: prompt, seed, prompt_id, node and the server's (sanitised) file name;
- `<stem><caption extension>` holding the prompt, when collect.caption = "prompt" (never replacing a
  caption file that is already there, e.g. one the user edited).

The run folder's `collect.json` records every submission (by the key of what it submitted): its
prompt_id as soon as it is sent ("pending"), its files once they are downloaded. A collect run again,
or resumed after a stop, downloads a pending prompt's result instead of submitting it again, and
submits only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_bytes, atomic_write_text

EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
SIDECAR = ".comfyui.json"


def safe_label(name: object, limit: int = 80) -> str:
    """A server-given name made safe to show (never to use as a path): no separators, no dots runs."""
    text = re.sub(r"[^A-Za-z0-9._ -]+", "_", str(name))
    text = re.sub(r"\.{2,}", "_", text).strip(" .")
    return text[:limit] or "_"


def image_extension(data: bytes) -> str | None:
    """The file extension of image bytes PIL can decode (.png/.jpg/.webp), or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.verify()
    except Exception:  # noqa: BLE001 - any decoder complaint means "not an image we keep"
        return None
    return EXTENSIONS.get(fmt or "")


def _write_error(path: Path, exc: OSError) -> LoratuiError:
    why = exc.strerror or str(exc)
    return LoratuiError(
        f"cannot write {path}: {why}",
        hint="free disk space or fix the folder's permissions (collect.output_dir); the images already "
        "downloaded are kept and a new collect continues from them",
        where=str(path),
    )


class ImageStore:
    """The output folder of a collect."""

    def __init__(self, folder: Path, *, caption: str = "prompt", caption_extension: str = ".txt"):
        self.folder = Path(folder)
        self.caption = caption
        self.caption_extension = caption_extension

    def prepare(self) -> None:
        """Create the folder; an existing file in its place or an unwritable parent is a clear error."""
        if self.folder.exists() and not self.folder.is_dir():
            raise LoratuiError(
                f"collect output folder {self.folder} is a file",
                hint="set collect.output_dir to a folder",
                where="collect.output_dir",
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(self.folder, exc) from None

    def existing(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.suffix.lower() in EXTENSIONS.values())

    def save(self, data: bytes, *, source: dict, content_type: str, meta: dict) -> tuple[Path, bool]:
        """Write one downloaded image; (its path, True when it was new). Raises for non-images."""
        label = safe_label(source.get("filename", "?"))
        ext = image_extension(data)
        if ext is None:
            head = data[:16]
            raise LoratuiError(
                f"ComfyUI sent {label!r} but it is not an image (Content-Type {content_type or 'none'}, "
                f"{len(data)} bytes starting {head!r})",
                hint="map collect.output_node / output_prefix to a node that saves images (SaveImage)",
                where=str(meta.get("prompt_id", "")),
            )
        digest = hashlib.sha256(data).hexdigest()
        path = self.folder / f"{digest[:16]}{ext}"
        # The name comes from our own hash, but check anyway: nothing leaves the output folder.
        if path.resolve().parent != self.folder.resolve():
            raise LoratuiError(f"refusing to write outside {self.folder}: {path}", where=str(path))
        new = not path.exists()
        try:
            if new:
                atomic_write_bytes(path, data)
            record = {
                **meta,
                "sha256": digest,
                "server_file": label,
                "server_subfolder": safe_label(source.get("subfolder", "")),
            }
            atomic_write_text(
                path.with_name(path.stem + SIDECAR), json.dumps(record, indent=2, ensure_ascii=False) + "\n"
            )
            prompt = meta.get("prompt")
            caption = path.with_name(path.stem + self.caption_extension)
            if self.caption == "prompt" and prompt and not caption.exists():
                atomic_write_text(caption, str(prompt) + "\n")
        except OSError as exc:
            raise _write_error(path, exc) from None
        return path, new


class Record:
    """`collect.json` in the run folder: {"jobs": {key: {"prompt_id", "files", "prompt", "seed"}}}."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.jobs: dict[str, dict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                jobs = data.get("jobs") if isinstance(data, dict) else None
                self.jobs = jobs if isinstance(jobs, dict) else {}
            except (OSError, ValueError):
                self.jobs = {}  # unreadable: submissions run again, downloads de-duplicate

    def done(self, key: str, folder: Path) -> bool:
        """True when the submission finished and its files are still there."""
        job = self.jobs.get(key)
        return (
            bool(job) and "files" in job and all((folder / name).is_file() for name in job.get("files", []))
        )

    def pending(self, key: str) -> str | None:
        """The prompt_id of a submission sent but not finished (a stop came while it ran)."""
        job = self.jobs.get(key) or {}
        return job.get("pending") if isinstance(job.get("pending"), str) else None

    def mark_pending(self, key: str, prompt_id: str) -> None:
        self.mark(key, {"pending": prompt_id})

    def mark(self, key: str, entry: dict) -> None:
        self.jobs[key] = entry
        try:
            atomic_write_text(self.path, json.dumps({"jobs": self.jobs}, indent=1) + "\n")
        except OSError as exc:
            raise _write_error(self.path, exc) from None
