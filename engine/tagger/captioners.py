"""Captioners by name (`wd14`, `florence2`) and the writer that runs one or several of them.

A captioner yields (path, text or None, error or None) per image (`texts(paths, batch_size)`).
Several in a list are run on the same images and their texts joined with ", " in list order: the
usual combination is a Florence-2 sentence followed by WD14 tags (`["florence2", "wd14"]`). The
trigger word goes first with the dataset's own rule (engine.data.captions.apply_trigger). Existing
caption files are kept unless overwrite; files are written atomically. The WD14-only path of
engine.tagger.run (`caption_images`) is unchanged; this one serves any list of captioners.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from engine.data.captions import apply_trigger
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from engine.tagger.run import CaptionSummary, caption_file, check_extensions, existing_caption, tag_images
from engine.tagger.tags import TagOptions, caption_text

CAPTIONERS = ("wd14", "florence2")


def parse_captioners(value) -> list[str]:
    """["florence2", "wd14"] from a list or a comma-separated string; errors name the bad entry."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    for name in names:
        if name not in CAPTIONERS:
            raise LoratuiError(
                f"unknown captioner {name!r}", hint="captioner is one of wd14, florence2, or a list of them"
            )
    if not names:
        raise LoratuiError("no captioner given", hint="wd14, florence2, or a list of them")
    return names


class WD14Captioner:
    """The WD14 tagger as a captioner: its tags as one comma-separated text (no trigger word)."""

    name = "wd14"

    def __init__(self, model, options: TagOptions) -> None:
        self.model = model
        self.options = replace(options, trigger_word="")
        self.device = model.device

    def texts(self, paths: Sequence[Path], batch_size: int = 8):
        for path, tags, err in tag_images(self.model, paths, self.options, batch_size):
            yield path, (caption_text(tags, self.options) if err is None else None), err

    def close(self) -> None:
        self.model = None


def write_captions(
    captioners: Sequence,
    images: Sequence[Path],
    *,
    trigger_word: str = "",
    extensions: Sequence[str] = (".txt", ".caption"),
    overwrite: bool = False,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    on_log: Callable[[str, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview: int = 0,
) -> tuple[CaptionSummary, list[dict]]:
    """Caption the images that need it with every captioner; write (or, with preview=N, return) them.

    Returns (summary, preview items); preview items are {"image", "existing", "caption", "error"}.
    """
    extensions = check_extensions(extensions)
    summary = CaptionSummary(images=len(images), device=", ".join(c.device for c in captioners))
    if preview:
        todo = list(images)[:preview]
    else:
        todo = [p for p in images if overwrite or existing_caption(p, extensions) is None]
        summary.skipped = len(images) - len(todo)
    items: list[dict] = []
    start = time.perf_counter()
    step = max(1, batch_size)
    if on_progress:
        on_progress(0, len(todo))
    for begin in range(0, len(todo), step):
        chunk = todo[begin : begin + step]
        parts: dict[Path, list[str]] = {p: [] for p in chunk}
        errors: dict[Path, LoratuiError] = {}
        for captioner in captioners:
            for path, text, err in captioner.texts(chunk, step):
                if err is not None:
                    errors[path] = err
                elif text:
                    parts[path].append(text)
        for path in chunk:
            err = errors.get(path)
            text = apply_trigger(", ".join(parts[path]), trigger_word) if parts[path] else ""
            if preview:
                existing = existing_caption(path, extensions)
                items.append(
                    {
                        "image": str(path),
                        "existing": existing.read_text(encoding="utf-8", errors="replace").strip()
                        if existing
                        else None,
                        "caption": None if err else text,
                        "error": err.to_dict() if err else None,
                    }
                )
                continue
            if err is not None:
                summary.failed += 1
                summary.failures.append({"image": str(path), "message": err.message})
                if on_log:
                    on_log("warning", f"skipped {path}: {err.message}")
                continue
            summary.tagged += 1
            if not parts[path]:
                summary.empty += 1
                if on_log:
                    on_log("warning", f"no caption for {path}: no file written")
                continue
            atomic_write_text(caption_file(path, extensions), text + "\n")
            summary.written += 1
        done = min(len(todo), begin + step)
        if on_progress:
            on_progress(done, len(todo))
        if should_stop is not None and done < len(todo) and should_stop():
            summary.stopped = True
            break
    summary.seconds = time.perf_counter() - start
    return summary, items


def load_captioners(
    names: Sequence[str],
    *,
    tagger: str | Path = "",
    tag_options: TagOptions | None = None,
    florence_model: str | Path = "",
    task: str = "<CAPTION>",
    device: str = "auto",
) -> list:
    """The captioners of `names`, loaded (WD14 needs `tagger`, Florence-2 `florence_model`)."""
    out = []
    for name in names:
        if name == "wd14":
            if not str(tagger).strip():
                raise LoratuiError(
                    "the wd14 captioner needs a tagger folder",
                    hint="set [caption_auto] tagger / --tagger to a folder with model.onnx + selected_tags.csv",
                    where="tagger",
                )
            from engine.tagger.model import TaggerModel

            out.append(WD14Captioner(TaggerModel(tagger, device=device), tag_options or TagOptions()))
        else:
            from engine.tagger.florence import Florence2Captioner

            out.append(Florence2Captioner(florence_model, task=task, device=device))
    return out
