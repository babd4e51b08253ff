"""Scan the dataset folders of a run: images, captions, repeats, buckets and everything odd about them.

The scan reads image headers only (no decoding), so it is quick even for thousands of images, and
runs before anything heavy: `python -m engine check` prints it, the trainer builds its batches from
`DatasetScan.items`. Unreadable files are listed and skipped; only a dataset left with no usable
image at all is an error (when `strict`).
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.buckets import BucketAssigner, BucketSettings, Size
from engine.data.captions import CLIP_MAX_TOKENS, TokenCounter, apply_trigger, read_caption_raw
from engine.data.images import image_size, is_image
from engine.data.inventory import unused_files
from engine.errors import LoratuiError
from engine.fsutil import file_sha256
from engine.textfile import TextEncodingError

# kohya's folder convention: "10_mychar" repeats its images 10 times.
_REPEATS_RE = re.compile(r"^(\d+)_(.+)$")


@dataclass
class ImageItem:
    """One training item: an image file with its caption and bucket.

    With dataset.sub_images > 0 the same file appears again with sub_image_scale < 1 and a smaller
    bucket; the trainer fits the original image to `bucket` either way.
    """

    path: Path  # absolute
    rel: str  # shown to users: "<dataset folder name>/<path inside it>"
    folder: str  # the image's folder, in the same form as rel
    repeats: int
    caption: str  # trigger word applied; augmentation happens at train time
    caption_source: str  # "file" | "phrase" | "none" | "missing"
    width: int  # as displayed (EXIF rotation applied)
    height: int
    bucket: Size  # (width, height)
    sha256: str | None = None
    sub_image_scale: float = 1.0


@dataclass
class FolderInfo:
    folder: str
    path: Path
    images: int  # usable image files directly in this folder
    repeats: int
    samples: int = 0  # samples per epoch from this folder: items (sub-images included) x repeats


@dataclass
class DatasetScan:
    items: list[ImageItem] = field(default_factory=list)
    folders: list[FolderInfo] = field(default_factory=list)
    buckets: list[Size] = field(default_factory=list)  # every bucket the settings allow
    native_sizes: bool = False  # resize = "none": bucket_histogram holds the images' own sizes
    bucket_histogram: dict[Size, int] = field(default_factory=dict)  # items per bucket in use
    missing_captions: list[str] = field(default_factory=list)  # rel of images without a caption file
    empty_captions: list[str] = field(default_factory=list)  # caption file exists but is empty
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason)
    # (rel of the caption file, reason): not UTF-8 / BOM-marked UTF-16; its image is not trained
    bad_captions: list[tuple[str, str]] = field(default_factory=list)
    unused: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason): every other file
    long_captions: list[tuple[str, int]] = field(default_factory=list)  # (rel, tokens) over 75 tokens
    duplicates: list[list[str]] = field(default_factory=list)  # groups of rel with the same bytes
    clamped_aspect: list[tuple[str, float]] = field(default_factory=list)  # (rel, aspect) past max_aspect
    upscaled: list[str] = field(default_factory=list)  # rel of images enlarged to fill their bucket
    skipped_folders: list[str] = field(default_factory=list)  # "0_name" folders (repeats 0)
    token_counter: str = ""  # how tokens were counted
    total_images: int = 0  # distinct usable image files
    total_samples_per_epoch: int = 0  # sum of repeats over items

    def require_images(self) -> None:
        """Raise when there is nothing to train on, or a caption file would be trained as garbage."""
        if self.bad_captions:
            rel, why = self.bad_captions[0]
            more = f" (and {len(self.bad_captions) - 1} more)" if len(self.bad_captions) > 1 else ""
            raise LoratuiError(
                f"caption file {rel} {why}{more}",
                hint="save the caption files as UTF-8; `loratui check` lists them all",
                where=rel,
            )
        if self.items:
            return
        hint = "put .png/.jpg/.webp images into the folders listed in dataset.dirs"
        if self.unreadable:
            hint = (
                f"none of the {len(self.unreadable)} image files could be read; re-save them as PNG or JPEG"
            )
        raise LoratuiError("the dataset has no usable images", hint=hint, where="dataset.dirs")


EXCLUDED_DIR = "excluded"


def folder_repeats(name: str) -> int | None:
    """Repeats encoded in a folder name ("10_mychar" -> 10), None when there is no N_ prefix."""
    m = _REPEATS_RE.match(name)
    return int(m.group(1)) if m else None


def dataset_roots(cfg) -> list[Path]:
    """The resolved dataset.dirs; a missing folder is an error naming the key and the path."""
    dirs = list(cfg.dataset.dirs)
    if not dirs:
        raise LoratuiError(
            "no dataset folders given",
            hint='set dataset.dirs = ["/path/to/images"] (a folder named 10_name repeats its images 10 times)',
            where="dataset.dirs",
        )
    roots = []
    for d in dirs:
        p = cfg.resolve_path(d)
        if not p.exists():
            raise LoratuiError(
                f"dataset folder not found: {p}",
                hint="check the path; relative paths are relative to the workspace " + f"({cfg.workspace})",
                where="dataset.dirs",
            )
        if not p.is_dir():
            raise LoratuiError(
                f"dataset path is not a folder: {p}",
                hint="dataset.dirs lists folders of images, not single files",
                where="dataset.dirs",
            )
        roots.append(p)
    return roots


def _walk_images(root: Path) -> list[Path]:
    """Image files under root, sorted, skipping hidden files and folders (.cache, .ipynb_checkpoints)
    and `excluded/` folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # excluded/ holds images taken out of the dataset (the TUI's dataset browser moves them there).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != EXCLUDED_DIR)
        for name in sorted(filenames):
            if not name.startswith(".") and is_image(name):
                found.append(Path(dirpath) / name)
    return found


def _label(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return root.name if rel == Path(".") else f"{root.name}/{rel.as_posix()}"


def _repeats_for(root: Path, folder: Path, default: int) -> int:
    """The N of the nearest N_name folder from `folder` up to and including `root`, else `default`."""
    current = folder
    while True:
        n = folder_repeats(current.name)
        if n is not None:
            return n
        if current == root or current.parent == current:
            return default
        current = current.parent


def scan_dataset(
    cfg,
    *,
    token_counter: TokenCounter | None = None,
    hash_files: bool = True,
    strict: bool = True,
) -> DatasetScan:
    """Scan cfg.dataset.dirs. `strict`: raise LoratuiError when no usable image is left."""
    ds = cfg.dataset
    roots = dataset_roots(cfg)
    if token_counter is None:
        token_counter = TokenCounter.for_model(cfg.resolve_path(cfg.model.base) if cfg.model.base else None)
    assigner = BucketAssigner(BucketSettings.from_dataset(ds))
    scan = DatasetScan(
        buckets=list(assigner.buckets),
        token_counter=token_counter.describe,
        native_sizes=assigner.settings.native,
    )

    folder_counts: dict[tuple[str, Path], int] = defaultdict(int)
    folder_repeat: dict[tuple[str, Path], int] = {}
    by_hash: dict[str, list[str]] = defaultdict(list)
    seen_paths: set[Path] = set()
    long_cache: dict[str, int] = {}

    for root in roots:
        for path in _walk_images(root):
            real = path.resolve()
            if real in seen_paths:  # the same folder listed twice, or reached through a link
                continue
            seen_paths.add(real)
            rel = _label(root, path)
            folder_key = (_label(root, path.parent), path.parent)
            repeats = _repeats_for(root, path.parent, int(ds.repeats))
            folder_repeat[folder_key] = repeats
            if repeats <= 0:
                if folder_key[0] not in scan.skipped_folders:
                    scan.skipped_folders.append(folder_key[0])
                continue
            try:
                width, height = image_size(path)
            except LoratuiError as exc:
                scan.unreadable.append((rel, _reason(exc)))
                continue
            try:
                caption, source = read_caption_raw(path, ds)
            except TextEncodingError as exc:
                scan.bad_captions.append(
                    (_label(root, Path(exc.where)), exc.message.replace(exc.where, "").strip())
                )
                continue
            folder_counts[folder_key] += 1
            if source == "missing":
                scan.missing_captions.append(rel)
            elif source == "file" and not caption:
                scan.empty_captions.append(rel)
            caption = apply_trigger(caption, ds.trigger_word)
            if caption:
                n = long_cache.get(caption)
                if n is None:
                    n = long_cache[caption] = token_counter(caption)
                if n > CLIP_MAX_TOKENS:
                    scan.long_captions.append((rel, n))

            digest = file_sha256(path) if hash_files else None
            if digest:
                by_hash[digest].append(rel)

            choice = assigner.assign(width, height)
            if choice.clamped:
                scan.clamped_aspect.append((rel, round(max(width, height) / min(width, height), 3)))
            if choice.upscaled:
                scan.upscaled.append(rel)
            item = ImageItem(
                path=path,
                rel=rel,
                folder=folder_key[0],
                repeats=repeats,
                caption=caption,
                caption_source=source,
                width=width,
                height=height,
                bucket=choice.bucket,
                sha256=digest,
            )
            scan.items.append(item)
            scan.total_images += 1
            for scale, sub in assigner.sub_buckets(choice.bucket, int(ds.sub_images)):
                scan.items.append(
                    ImageItem(
                        path=path,
                        rel=rel,
                        folder=item.folder,
                        repeats=repeats,
                        caption=caption,
                        caption_source=source,
                        width=width,
                        height=height,
                        bucket=sub,
                        sha256=digest,
                        sub_image_scale=scale,
                    )
                )

    for root in roots:
        scan.unused.extend(unused_files(root, _label, ds, skipped_folders=set(scan.skipped_folders)))

    folder_samples = Counter()
    for item in scan.items:
        folder_samples[item.folder] += item.repeats
    for (label, path), repeats in folder_repeat.items():
        count = folder_counts.get((label, path), 0)
        if count or repeats <= 0:
            scan.folders.append(
                FolderInfo(
                    folder=label, path=path, images=count, repeats=repeats, samples=folder_samples[label]
                )
            )
    scan.duplicates = [group for group in by_hash.values() if len(group) > 1]
    histogram = Counter(item.bucket for item in scan.items)
    scan.bucket_histogram = dict(sorted(histogram.items(), key=lambda kv: (kv[0][0] / kv[0][1], kv[0])))
    scan.total_samples_per_epoch = sum(item.repeats for item in scan.items)
    if strict:
        scan.require_images()
    return scan


def _reason(exc: LoratuiError) -> str:
    # The message names the full path; in a list keyed by the image the reason alone reads better.
    msg = exc.message
    path_suffix = f": {exc.where}" if exc.where else ""
    if path_suffix and msg.endswith(path_suffix):
        msg = msg[: -len(path_suffix)]
    elif exc.where and f" {exc.where}: " in msg:
        msg = msg.replace(f" {exc.where}: ", ": ", 1)
    return msg
