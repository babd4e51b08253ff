"""Caption a dataset's images with a WD14 tagger, and the `caption_auto` step before training.

Only images without a caption file are tagged unless `overwrite` is set; an image "has a caption"
when a file with its stem and any of the caption extensions exists (the first extension is the one
written). Files are written atomically, so an interrupted run leaves each caption either old or new.
Images are decoded in a few threads while the model runs (PIL and onnxruntime release the GIL), with
a bounded look-ahead so memory stays flat on large folders.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import protocol
from engine.data.images import is_image
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from engine.tagger.preprocess import load_image
from engine.tagger.tags import TagOptions, caption_text, parse_tag_list, select_tags
from engine.textfile import TextEncodingError, read_user_text

DEFAULT_CAPTION_EXTENSIONS = (".txt", ".caption")

Progress = Callable[[int, int], None]
Log = Callable[[str, str], None]  # (level, message)


def find_images(dirs: Iterable[str | Path], recursive: bool = True, *, required: bool = False) -> list[Path]:
    """Image files under `dirs` (sub-folders such as `10_name/` included), sorted; hidden ones skipped.
    Raises LoratuiError for a missing folder, and with `required` when no image is found."""
    dirs = [str(d) for d in dirs]
    found: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise LoratuiError(
                "the dataset folder does not exist" if not root.exists() else "not a folder",
                hint="give the folder that holds the training images",
                where=str(root),
            )
        walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
        for folder, subdirs, files in walker:
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
            for name in files:
                if not name.startswith(".") and is_image(name):
                    found.append(Path(folder) / name)
    if required and not found:
        from engine.data.images import image_suffixes

        raise LoratuiError(
            "no images found (looked for " + " ".join(sorted(image_suffixes())) + ")",
            hint="give the folder that holds the training images",
            where=", ".join(dirs),
        )
    return sorted(set(found))


def caption_file(image: Path, extensions: Sequence[str]) -> Path:
    """Where the caption of `image` is written: same stem, first caption extension."""
    return image.with_name(image.stem + extensions[0])


def existing_caption(image: Path, extensions: Sequence[str]) -> Path | None:
    """The caption file the dataset would read for `image`, or None."""
    for ext in extensions:
        p = image.with_name(image.stem + ext)
        if p.is_file():
            return p
    return None


def check_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    exts = tuple(e if e.startswith(".") else "." + e for e in extensions if e)
    if not exts:
        raise LoratuiError(
            "no caption extension given", hint='use e.g. [".txt", ".caption"]', where="caption_extensions"
        )
    return exts


@dataclass
class CaptionSummary:
    """What a captioning pass did (also the `caption_finished` event of `engine caption --json`)."""

    images: int = 0  # images found
    tagged: int = 0  # images run through the model
    written: int = 0
    skipped: int = 0  # already had a caption (and no overwrite)
    failed: int = 0
    empty: int = 0  # no tag above the thresholds (no file written)
    stopped: bool = False
    seconds: float = 0.0
    device: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "tagged": self.tagged,
            "written": self.written,
            "skipped": self.skipped,
            "failed": self.failed,
            "empty": self.empty,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "device": self.device,
            "failures": self.failures,
        }


def _iter_batches(paths: Sequence[Path], size: int, batch_size: int, workers: int):
    """Yield lists of (path, array or None, error or None), decoding ahead in a thread pool."""

    def load(p: Path):
        try:
            return p, load_image(p, size), None
        except LoratuiError as exc:
            return p, None, exc

    ahead = max(batch_size * 2, workers * 2)
    it = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagger-load") as pool:
        pending: deque = deque()

        def fill() -> None:
            while len(pending) < ahead:
                p = next(it, None)
                if p is None:
                    return
                pending.append(pool.submit(load, p))

        fill()
        while pending:
            batch = []
            while pending and len(batch) < batch_size:
                batch.append(pending.popleft().result())
                fill()
            yield batch


def tag_images(model, paths: Sequence[Path], options: TagOptions, batch_size: int = 8, workers: int = 0):
    """Yield (path, tags or None, error or None) per image, in order; the model runs on batches."""
    workers = workers or min(4, os.cpu_count() or 1)
    for batch in _iter_batches(paths, model.size, max(1, batch_size), workers):
        good = [(p, a) for p, a, e in batch if e is None]
        probs = model.predict(np.stack([a for _, a in good])) if good else None
        row = 0
        for p, _, err in batch:
            if err is not None:
                yield p, None, err
            else:
                yield p, select_tags(probs[row], model.labels, options), None
                row += 1


def caption_images(
    model,
    images: Sequence[Path],
    options: TagOptions,
    *,
    extensions: Sequence[str] = DEFAULT_CAPTION_EXTENSIONS,
    overwrite: bool = False,
    batch_size: int = 8,
    on_progress: Progress | None = None,
    on_log: Log | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CaptionSummary:
    """Tag `images` that need a caption and write their caption files; a bad image is logged, not fatal.

    `should_stop` is polled after every image; when it returns True the pass ends early (the files
    written so far stay) and `summary.stopped` is set.
    """
    extensions = check_extensions(extensions)
    summary = CaptionSummary(images=len(images), device=model.device)
    todo = [p for p in images if overwrite or existing_caption(p, extensions) is None]
    # `a.png` and `a.jpg` in one folder would share `a.txt`: tag only the first, say so.
    seen: set[Path] = set()
    unique = []
    for p in todo:
        target = caption_file(p, extensions)
        if target in seen:
            if on_log:
                on_log("warning", f"skipped {p}: another image already writes {target.name}")
            continue
        seen.add(target)
        unique.append(p)
    todo = unique
    summary.skipped = len(images) - len(todo)
    start = time.perf_counter()
    done = 0
    if on_progress:
        on_progress(0, len(todo))
    results = tag_images(model, todo, options, batch_size)
    for path, tags, err in results:
        done += 1
        if err is not None:
            summary.failed += 1
            summary.failures.append({"image": str(path), "message": err.message})
            if on_log:
                on_log("warning", f"skipped {path}: {err.message}")
        else:
            summary.tagged += 1
            text = caption_text(tags, options)
            if not text:
                # No file rather than an empty one: the dataset then falls back to the phrase, the
                # check reports the image as uncaptioned, and a run with lower thresholds retries it.
                summary.empty += 1
                if on_log:
                    on_log("warning", f"no tag above the thresholds for {path}: no caption file written")
            else:
                atomic_write_text(caption_file(path, extensions), text + "\n")
                summary.written += 1
        # Report per batch-sized step (and at the end) rather than per image: fewer events.
        if on_progress and (done % max(1, batch_size) == 0 or done == len(todo)):
            on_progress(done, len(todo))
        if should_stop is not None and done < len(todo) and should_stop():
            summary.stopped = True
            break
    results.close()  # ends the decoding threads now rather than at garbage collection
    summary.seconds = time.perf_counter() - start
    return summary


def preview_images(
    model,
    images: Sequence[Path],
    options: TagOptions,
    count: int,
    *,
    extensions: Sequence[str] = DEFAULT_CAPTION_EXTENSIONS,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Tags of the first `count` images, with scores and their current caption; writes nothing."""
    extensions = check_extensions(extensions)
    items = []
    for path, tags, err in tag_images(model, list(images)[: max(0, count)], options, batch_size):
        existing = existing_caption(path, extensions)
        item: dict[str, Any] = {"image": str(path), "existing": None}
        if existing:
            try:
                item["existing"] = read_user_text(existing).strip()
            except (TextEncodingError, OSError) as exc:
                item["existing_error"] = getattr(exc, "message", str(exc))
        if err is not None:
            item.update(caption=None, tags=[], error=err.to_dict())
        else:
            item.update(
                caption=caption_text(tags, options),
                tags=[
                    {"tag": t.text, "name": t.name, "category": t.category, "score": round(t.score, 4)}
                    for t in tags
                ],
                error=None,
            )
        items.append(item)
    return items


def run_caption_auto(
    cfg,
    emit: Callable[[dict[str, Any]], None],
    run: str | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """The `caption_auto` step of a training run: tag the dataset's uncaptioned images first.

    Does nothing (returns None) when `caption_auto.tagger` is empty. The trigger word is NOT written
    into the files: the dataset loader puts `dataset.trigger_word` first in every caption at training
    time, and writing it here too would double it. Raises LoratuiError for a bad tagger folder.
    """
    auto = cfg.caption_auto
    if not caption_auto_enabled(cfg):
        return None
    if getattr(cfg.dataset, "caption", "file") != "file":
        emit(
            protocol.log(
                f"caption_auto.tagger is set but dataset.caption is {cfg.dataset.caption!r}, so caption "
                "files are not read: skipping auto-captioning",
                level="warning",
                run=run,
            )
        )
        return None
    extensions = check_extensions(cfg.dataset.caption_extensions)
    images = find_images([cfg.resolve_path(d) for d in cfg.dataset.dirs])
    todo = [p for p in images if auto.overwrite or existing_caption(p, extensions) is None]
    if not todo:
        # Loading the model costs seconds; skip it when every image already has a caption.
        emit(protocol.log(f"caption_auto: all {len(images)} images have captions", run=run))
        return CaptionSummary(images=len(images), skipped=len(images))
    emit(protocol.phase(run=run, name="caption", done=0, total=len(todo)))
    if list(auto.captioner) != ["wd14"]:
        return _caption_auto_with(cfg, images, extensions, emit, run, should_stop)
    from engine.tagger.model import TaggerModel  # imports onnxruntime; only when really needed

    model = TaggerModel(cfg.resolve_path(auto.tagger))
    emit(protocol.log(f"caption_auto: tagging {len(todo)} images on {model.device}", run=run))
    options = tag_options_of(auto)
    summary = caption_images(
        model,
        images,
        options,
        extensions=extensions,
        overwrite=bool(auto.overwrite),
        batch_size=int(auto.batch_size),
        on_progress=lambda d, t: emit(protocol.phase(run=run, name="caption", done=d, total=t)),
        on_log=lambda level, msg: emit(protocol.log(msg, level=level, run=run)),
        should_stop=should_stop,
    )
    emit(
        protocol.log(
            f"caption_auto: wrote {summary.written} captions ({summary.skipped} already captioned, "
            f"{summary.failed} unreadable) in {summary.seconds:.1f} s",
            run=run,
        )
    )
    return summary


def tag_options_of(auto) -> TagOptions:
    """The WD14 tag options of a [caption_auto] section."""
    return TagOptions(
        general_threshold=float(auto.general_threshold),
        character_threshold=float(auto.character_threshold),
        undesired_tags=parse_tag_list(auto.undesired_tags),
        escape=bool(auto.escape),
    )


def caption_auto_enabled(cfg) -> bool:
    """Whether [caption_auto] asks for captions: wd14 alone needs a tagger; florence2 (validated) a model."""
    auto = cfg.caption_auto
    if list(auto.captioner) == ["wd14"]:
        return bool(auto.tagger)
    return bool(auto.captioner)


def _caption_auto_with(cfg, images, extensions, emit, run, should_stop):
    """caption_auto with Florence-2 (alone or with WD14): the models are freed before training starts."""
    from engine.tagger.captioners import load_captioners, write_captions

    auto = cfg.caption_auto
    options = tag_options_of(auto)
    captioners = load_captioners(
        list(auto.captioner),
        tagger=cfg.resolve_path(auto.tagger) if auto.tagger else "",
        tag_options=options,
        florence_model=cfg.resolve_path(auto.model) if auto.model else "",
        task=auto.task,
    )
    try:
        names = " + ".join(c.name for c in captioners)
        emit(protocol.log(f"caption_auto: {names} on {', '.join(c.device for c in captioners)}", run=run))
        summary, _ = write_captions(
            captioners,
            images,
            extensions=extensions,
            overwrite=bool(auto.overwrite),
            batch_size=int(auto.batch_size),
            on_progress=lambda d, t: emit(protocol.phase(run=run, name="caption", done=d, total=t)),
            on_log=lambda level, msg: emit(protocol.log(msg, level=level, run=run)),
            should_stop=should_stop,
        )
    finally:
        for captioner in captioners:
            captioner.close()  # the captioning models leave memory before the base model loads
    emit(
        protocol.log(
            f"caption_auto: wrote {summary.written} captions ({summary.skipped} already captioned, "
            f"{summary.failed} unreadable) in {summary.seconds:.1f} s",
            run=run,
        )
    )
    return summary
