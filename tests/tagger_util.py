"""Helpers for the tagger tests: the toy tagger (tests.tiny_tagger) and a folder of known images.

The toy tagger's tags depend on the mean colour (see tests/tiny_tagger.py), so each image below
has a caption that can be written out by hand.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.tiny_tagger import build_tiny_tagger

# What the toy tagger writes with the defaults (general 0.35, character 0.85, escaping on).
RED = "kagamine rin \\(vocaloid\\), red theme, ^_^, hat \\(object\\), simple background, looking at viewer"
BLUE = "blue background, simple background, looking at viewer"
GREEN = "hatsune miku, green theme, simple background, looking at viewer"
# 64x16 red padded with white: B and G means are 0.75, so blue/green tags fire too.
WIDE_RED = (
    "kagamine rin \\(vocaloid\\), hatsune miku, red theme, blue background, green theme, ^_^, "
    "hat \\(object\\), simple background, looking at viewer"
)
# Fully transparent: composited onto white, everything but the meta row fires.
CLEAR = (
    "kagamine rin \\(vocaloid\\), hatsune miku, red theme, blue background, green theme, ^_^, "
    "hat \\(object\\), simple background, looking at viewer, white background"
)


def make_tagger(folder: Path, **kwargs) -> Path:
    return build_tiny_tagger(folder, **kwargs)


def make_images(folder: Path, broken: bool = False) -> Path:
    """red.png, blue.jpg (RGB), 10_sub/green.png, 10_sub/wide.png (64x16 red), clear.png (RGBA, alpha 0)."""
    sub = folder / "10_sub"
    sub.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (255, 0, 0)).save(folder / "red.png")
    Image.new("RGB", (48, 48), (0, 0, 255)).save(folder / "blue.png")
    Image.new("RGB", (40, 56), (0, 255, 0)).save(sub / "green.png")
    Image.new("RGB", (64, 16), (255, 0, 0)).save(sub / "wide.png")
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(folder / "clear.png")
    if broken:
        (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")
