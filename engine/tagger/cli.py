"""`python -m engine caption DIR --tagger MODEL_DIR [...]`: caption a dataset folder (WD14 and/or Florence-2).

`--captioner florence2 --model DIR [--task <DETAILED_CAPTION>]` writes Florence-2 sentences,
`--captioner florence2,wd14` a sentence followed by WD14 tags (engine.tagger.captioners).

Without --json a counter line on stderr shows progress and one summary line goes to stdout. With
--json, stdout carries protocol lines only (what the TUI reads): `phase` events ("load_model",
"caption" with done/total), `log` events, and a final `caption_finished` event with the counts (or
the error). `--preview N` tags the first N images and prints their tags as JSON without writing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine import protocol
from engine.errors import LoratuiError
from engine.tagger.tags import TagOptions, parse_tag_list

CAPTION_FINISHED = "caption_finished"
PREVIEW = "preview"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loratui caption",
        description="Write WD14 tag captions for the images of a dataset folder (only images without a "
        "caption file, unless --overwrite).",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="dataset folder(s); sub-folders are included")
    p.add_argument(
        "--tagger",
        default="",
        metavar="MODEL_DIR",
        help="WD14: folder holding model.onnx and selected_tags.csv (e.g. SmilingWolf/wd-swinv2-tagger-v3)",
    )
    p.add_argument(
        "--captioner",
        default="wd14",
        metavar="NAMES",
        help="wd14 (tags), florence2 (a sentence), or both in order, e.g. florence2,wd14 (default wd14)",
    )
    p.add_argument(
        "--model",
        default="",
        metavar="DIR",
        help="Florence-2 model folder in transformers' format (e.g. florence-community/Florence-2-base)",
    )
    p.add_argument(
        "--task",
        default="<CAPTION>",
        choices=["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"],
        help="Florence-2 task (default <CAPTION>)",
    )
    p.add_argument("--general-threshold", type=float, default=0.35, metavar="P")
    p.add_argument("--character-threshold", type=float, default=0.85, metavar="P")
    p.add_argument("--undesired-tags", default="", metavar="A,B", help="comma-separated tags to leave out")
    p.add_argument("--overwrite", action="store_true", help="re-caption images that have a caption file")
    p.add_argument("--trigger-word", default="", metavar="WORD", help="written first in every caption")
    p.add_argument("--batch-size", type=int, default=8, metavar="N")
    p.add_argument("--with-rating", action="store_true", help="add the rating tag (general, sensitive, ...)")
    p.add_argument("--no-escape", action="store_true", help="do not escape ( ) as \\( \\)")
    p.add_argument(
        "--caption-extensions",
        default=".txt,.caption",
        metavar="EXTS",
        help="caption file extensions: an image with any of them is captioned; the first is written "
        "(default .txt,.caption)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--preview", type=int, default=0, metavar="N", help="print the tags of N images, write nothing"
    )
    p.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    p.add_argument(
        "--workspace",
        default="",
        metavar="DIR",
        help="relative DIR and MODEL_DIR paths start here (default: the current folder), as in check/train",
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--general-threshold", args.general_threshold),
        ("--character-threshold", args.character_threshold),
    ):
        if not 0.0 <= value <= 1.0:
            raise LoratuiError(f"{flag} {value} is outside 0..1", hint="0.35 is usual", where=flag)
    if args.batch_size < 1:
        raise LoratuiError(f"--batch-size {args.batch_size} must be at least 1", where="--batch-size")
    if args.preview < 0:
        raise LoratuiError(f"--preview {args.preview} must be 0 or more", where="--preview")


class _Counter:
    """A one-line progress counter on stderr (rewritten in place on a terminal, throttled lines otherwise)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        final = done == total
        if not self.tty and not final and now - self.last < 2.0:
            return
        self.last = now
        rate = done / (now - self.start) if now > self.start else 0.0
        line = f"captioning {done}/{total} ({rate:.1f} img/s)"
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workspace:
        # Path joins keep absolute paths as they are.
        ws = Path(args.workspace).expanduser()
        args.dirs = [str(ws / d) for d in args.dirs]
        args.tagger = str(ws / args.tagger) if args.tagger else ""
        args.model = str(ws / args.model) if args.model else ""
    writer = protocol.EventWriter(sys.stdout) if args.json else None

    def emit(event: dict[str, Any]) -> None:
        if writer is not None:
            writer.emit(event)

    def log(level: str, message: str) -> None:
        if writer is not None:
            writer.emit(protocol.log(message, level=level))
        else:
            print(f"{level}: {message}", file=sys.stderr, flush=True)

    try:
        summary, items = _run(args, emit, log)
    except LoratuiError as exc:
        if writer is not None:
            writer.emit({"type": CAPTION_FINISHED, "status": "failed", "error": exc.to_dict()})
        else:
            print(exc.render(), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if writer is not None:
            writer.emit({"type": CAPTION_FINISHED, "status": "stopped", "error": None})
        return 130
    if items is not None:
        if writer is not None:
            writer.emit({"type": PREVIEW, "items": items})
        else:
            print(json.dumps(items, indent=2, ensure_ascii=False))
        return 0
    if writer is not None:
        writer.emit({"type": CAPTION_FINISHED, "status": "done", "error": None, **summary.to_dict()})
    else:
        print(
            f"wrote {summary.written} caption files ({summary.skipped} images already captioned, "
            f"{summary.failed} unreadable, {summary.empty} without tags) in {summary.seconds:.1f} s "
            f"on {summary.device} ({summary.images_per_second:.1f} img/s)"
        )
    return 0


def _run(args: argparse.Namespace, emit, log):
    from engine.tagger.model import TaggerModel  # onnxruntime: not needed for --help or bad args
    from engine.tagger.run import (
        caption_images,
        check_extensions,
        find_images,
        preview_images,
    )

    _check_args(args)
    from engine.tagger.captioners import parse_captioners

    names = parse_captioners(args.captioner)
    if names != ["wd14"]:
        return _run_captioners(args, names, emit, log)
    if not args.tagger:
        raise LoratuiError(
            "--tagger MODEL_DIR is needed for WD14 tags",
            hint="a folder with model.onnx + selected_tags.csv; or --captioner florence2 --model DIR",
            where="--tagger",
        )
    options = TagOptions(
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        undesired_tags=parse_tag_list(args.undesired_tags),
        trigger_word=args.trigger_word,
        with_rating=args.with_rating,
        escape=not args.no_escape,
    )
    extensions = check_extensions(parse_tag_list(args.caption_extensions))
    images = find_images(args.dirs, required=True)
    emit(protocol.phase(run=None, name="load_model", done=0, total=1))
    model = TaggerModel(args.tagger, device=args.device)
    emit(protocol.phase(run=None, name="load_model", done=1, total=1))
    log("info", f"tagger {model.folder} ({len(model.labels)} tags, {model.size}px) on {model.provider}")
    if args.preview:
        return None, preview_images(
            model, images, options, args.preview, extensions=extensions, batch_size=args.batch_size
        )
    if args.json:

        def progress(done: int, total: int) -> None:
            emit(protocol.phase(run=None, name="caption", done=done, total=total))
    else:
        progress = _Counter(sys.stderr)
    summary = caption_images(
        model,
        images,
        options,
        extensions=extensions,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        on_progress=progress,
        on_log=log,
    )
    return summary, None


def _run_captioners(args: argparse.Namespace, names: list[str], emit, log):
    """Florence-2 (alone or with WD14): the same flags, files and events as the WD14 path."""
    from engine.tagger.captioners import load_captioners, write_captions
    from engine.tagger.florence import resolve_florence_dir
    from engine.tagger.run import check_extensions, find_images

    if "florence2" in names:
        resolve_florence_dir(args.model)  # a wrong model folder is named before anything else
    extensions = check_extensions(parse_tag_list(args.caption_extensions))
    images = find_images(args.dirs, required=True)
    options = TagOptions(
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        undesired_tags=parse_tag_list(args.undesired_tags),
        with_rating=args.with_rating,
        escape=not args.no_escape,
    )
    emit(protocol.phase(run=None, name="load_model", done=0, total=1))
    captioners = load_captioners(
        names,
        tagger=args.tagger,
        tag_options=options,
        florence_model=args.model,
        task=args.task,
        device=args.device,
    )
    emit(protocol.phase(run=None, name="load_model", done=1, total=1))
    log("info", " + ".join(f"{c.name} on {c.device}" for c in captioners))
    progress = None
    if args.json:

        def progress(done: int, total: int) -> None:
            emit(protocol.phase(run=None, name="caption", done=done, total=total))
    else:
        progress = _Counter(sys.stderr)
    try:
        summary, items = write_captions(
            captioners,
            images,
            trigger_word=args.trigger_word,
            extensions=extensions,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            on_progress=None if args.preview else progress,
            on_log=log,
            preview=args.preview,
        )
    finally:
        for captioner in captioners:
            captioner.close()
    return (None, items) if args.preview else (summary, None)


if __name__ == "__main__":
    sys.exit(main())
