"""Every file of a dataset folder that the run will not use, with the reason (`check` lists them).

The scan trains on images and reads their captions; anything else in the folders is listed here so
no file is skipped without a word: hidden files and folders, caption files without an image (or not
read because another extension comes first, or because dataset.caption is not "file"), images in a
format that needs a Pillow plug-in that is not installed (engine.data.images.PLUGIN_FORMATS), other
image formats, and files that are neither images nor captions.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.data.images import is_image, missing_plugin

# Image formats users drop into dataset folders that are not trained on (layered, raw, vector).
_OTHER_IMAGES = frozenset(
    {
        ".psd",
        ".kra",
        ".xcf",
        ".svg",
        ".raw",
        ".dng",
        ".cr2",
        ".cr3",
        ".nef",
        ".arw",
        ".orf",
        ".rw2",
        ".jp2",
        ".ico",
        ".exr",
        ".hdr",
        ".tga",
        ".pcx",
        ".ppm",
        ".pgm",
        ".pbm",
        ".qoi",
        ".dds",
        ".apng",
        ".jfif",
    }
)


def _caption_suffixes(ds) -> list[str]:
    return [e.lower() if e.startswith(".") else "." + e.lower() for e in ds.caption_extensions]


def unused_files(root: Path, label, ds, *, skipped_folders=()) -> list[tuple[str, str]]:
    """(label, reason) for every file under `root` that is neither a trained image nor its caption.

    `label(root, path)` names a file as the scan does; `skipped_folders` (0-repeat folders, already
    reported as a whole) are not listed file by file. Images the scan found unreadable are not
    listed here either (the scan lists them with their own reason).
    """
    caps = _caption_suffixes(ds)
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        hidden = sorted(d for d in dirnames if d.startswith("."))
        for d in hidden:
            out.append((label(root, folder / d), "hidden folder: not scanned (its name starts with a dot)"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if label(root, folder) in skipped_folders:
            continue
        names = set(filenames)
        stems: dict[str, list[str]] = {}
        for name in names:
            stems.setdefault(Path(name).stem, []).append(name)
        for name in sorted(filenames):
            path = folder / name
            suffix = path.suffix.lower()
            why = None
            if name.startswith(".loratui"):
                continue  # loratui's own markers (the demo dataset's completion marker)
            if name.startswith("."):
                why = "hidden file: not used (its name starts with a dot)"
            elif is_image(name):
                continue  # trained, or listed by the scan as unreadable
            elif plugin := missing_plugin(name):
                why = f"{suffix} image: Pillow needs the {plugin} plug-in (pip install 'loratui[formats]')"
            elif suffix in caps:
                why = _caption_reason(name, stems.get(path.stem, []), caps, ds)
            elif suffix in _OTHER_IMAGES:
                why = f"{suffix} images are not trained on; re-save it as PNG or JPEG"
            else:
                why = "neither an image nor a caption file: not used"
            if why:
                out.append((label(root, path), why))
    return out


def _caption_reason(name: str, siblings: list[str], caps: list[str], ds) -> str | None:
    """Why a caption-suffixed file is not read, or None when it is some image's caption."""
    images = [s for s in siblings if is_image(s) and not s.startswith(".")]
    if not images:
        others = [s for s in siblings if s != name and Path(s).suffix.lower() not in caps]
        if others:
            return f"caption of {others[0]}, which is not trained on"
        return "caption file without an image (no image has this name)"
    if ds.caption != "file":
        return f'not read: dataset.caption = "{ds.caption}"'
    present = [c for c in caps if any(Path(s).suffix.lower() == c for s in siblings)]
    mine = Path(name).suffix.lower()
    if present and present[0] != mine:
        return f"not read: {present[0]} comes first in dataset.caption_extensions"
    return None
