"""Changes to a dataset made from the TUI's dataset browser: a caption rewritten, an image excluded.

Torch-free. Nothing is ever deleted:

- `write_caption` replaces the image's caption file (the one training reads: the first of
  dataset.caption_extensions that exists, else a new `<stem><first extension>`) atomically (temp
  file, fsync, rename). The text cache is keyed by the exact caption text (engine.train.caches), so the
  next run encodes only the edited caption again; the latent cache is keyed by the image's bytes and
  is unaffected.
- `exclude_image` moves the image and its caption files into `excluded/` at the top of its dataset
  folder (same sub-path), which scanning skips (engine.data.scan.EXCLUDED_DIR); an existing file
  of that name is never replaced (a numbered name is used).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.data.captions import find_caption_file
from engine.data.scan import EXCLUDED_DIR
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text


def caption_path(image: str | os.PathLike, extensions) -> Path:
    """The caption file training reads for `image` (it may not exist yet)."""
    found = find_caption_file(image, extensions)
    if found is not None:
        return found
    ext = next(iter(extensions), ".txt")
    ext = ext if ext.startswith(".") else "." + ext
    p = Path(image)
    return p.with_name(p.stem + ext)


def write_caption(image: str | os.PathLike, text: str, extensions) -> Path:
    """Write `text` (one line, whitespace collapsed) as the caption of `image`; returns the file.

    Raises:
        LoratuiError: the file cannot be written (names it).
    """
    path = caption_path(image, extensions)
    clean = " ".join(text.split())
    try:
        atomic_write_text(path, clean + "\n")
    except OSError as exc:
        raise LoratuiError(
            f"cannot write the caption {path}: {exc.strerror or exc}",
            hint="check the folder's permissions and free space",
            where=str(path),
        ) from exc
    return path


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    for n in range(1, 10_000):
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
        if not candidate.exists():
            return candidate
    raise LoratuiError(f"no free name for {target}", hint="empty the excluded/ folder", where=str(target))


def exclude_image(image: str | os.PathLike, root: str | os.PathLike, extensions) -> list[Path]:
    """Move `image` (under dataset folder `root`) and its caption files to `root/excluded/`.

    Returns the new paths (image first). Raises LoratuiError when a move fails; what was already
    moved stays moved (nothing is lost either way).
    """
    image, root = Path(image), Path(root)
    try:
        rel = image.relative_to(root)
    except ValueError:
        raise LoratuiError(
            f"{image} is not inside the dataset folder {root}", hint="pick the image from the browser"
        ) from None
    moved = []
    sources = [image]
    for ext in extensions:
        ext = ext if ext.startswith(".") else "." + ext
        cap = image.with_name(image.stem + ext)
        if cap.is_file():
            sources.append(cap)
    for src in sources:
        target = _free_name(root / EXCLUDED_DIR / rel.parent / src.name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(target))  # a rename on the same file system
        except OSError as exc:
            raise LoratuiError(
                f"cannot move {src} to {target}: {exc.strerror or exc}",
                hint="check the dataset folder's permissions",
                where=str(src),
            ) from exc
        moved.append(target)
    return moved
