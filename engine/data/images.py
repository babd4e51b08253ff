"""Open dataset images the same way everywhere: RGB, EXIF-rotated, transparency on white.

Cameras store portrait photos as landscape pixels plus an EXIF orientation tag, PNG cut-outs carry an
alpha channel, scans come as CMYK or 16-bit greyscale. Training needs plain 8-bit RGB in the
orientation a human sees, so every reader of images goes through `open_image` / `image_size`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from engine.errors import LoratuiError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# EXIF orientations 5..8 are rotations by 90/270 degrees: width and height swap.
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

_UNREADABLE_HINT = "re-save it as PNG or JPEG, or move it out of the dataset folder"


# Formats Pillow reads through a maintained plug-in (the `formats` extra): suffix -> (PIL format, package).
# Pillow >= 11.3 reads AVIF itself; pillow-heif adds HEIF/HEIC, pillow-jxl-plugin JPEG XL.
PLUGIN_FORMATS = {
    ".heic": ("HEIF", "pillow-heif"),
    ".heif": ("HEIF", "pillow-heif"),
    ".hif": ("HEIF", "pillow-heif"),
    ".avif": ("AVIF", "pillow-heif (or Pillow >= 11.3 built with AVIF)"),
    ".jxl": ("JXL", "pillow-jxl-plugin"),
}


@functools.cache
def image_suffixes() -> frozenset[str]:
    """Every suffix the dataset trains on: IMAGE_SUFFIXES plus the PLUGIN_FORMATS whose reader is
    installed. The plug-ins are registered with Pillow on the first call."""
    from PIL import Image

    try:
        import pillow_heif  # noqa: PLC0415 - optional, `pip install loratui[formats]`

        pillow_heif.register_heif_opener()
    except Exception:  # not installed, or a broken libheif: those files are listed by `check`
        pass
    try:
        import pillow_jxl  # noqa: F401, PLC0415 - registers JPEG XL with Pillow on import
    except Exception:
        pass
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return IMAGE_SUFFIXES | frozenset(ext for ext in PLUGIN_FORMATS if ext in readable)


def missing_plugin(path: str | os.PathLike) -> str | None:
    """For an image format Pillow needs a plug-in for that is not installed: the package to install."""
    suffix = Path(path).suffix.lower()
    if suffix in PLUGIN_FORMATS and suffix not in image_suffixes():
        return PLUGIN_FORMATS[suffix][1]
    return None


def is_image(path: str | os.PathLike) -> bool:
    """True for a file name with a suffix the dataset trains on (case-insensitive)."""
    return Path(path).suffix.lower() in image_suffixes()


def _open_checked(path: Path):
    """Image.open with every failure turned into a LoratuiError naming the image."""
    from PIL import Image, UnidentifiedImageError

    image_suffixes()  # plug-in formats registered before the first open

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoratuiError(
            f"cannot read image {path}: {exc.strerror or exc}", hint=_UNREADABLE_HINT, where=str(path)
        ) from None
    if size == 0:
        raise LoratuiError(
            f"image file is empty (0 bytes): {path}",
            hint="the file was probably cut off while copying; copy it again or delete it",
            where=str(path),
        )
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise LoratuiError(
            f"not a readable image: {path}",
            hint=f"the file is damaged or not an image; {_UNREADABLE_HINT}",
            where=str(path),
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LoratuiError(
            f"cannot read image {path}: {exc}", hint=_UNREADABLE_HINT, where=str(path)
        ) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied), reading only the header.

    Also runs Pillow's cheap structural check (`verify`, and a 1/8-scale decode of JPEGs), so damaged
    files are caught at scan time rather than in the middle of a run.
    """
    p = Path(path)
    try:
        with _open_checked(p) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # a broken EXIF block is not worth refusing the image over
                orientation = None
        # verify() must come straight after open, so the file is opened a second time.
        with _open_checked(p) as img:
            fmt = img.format
            img.verify()
        if fmt == "JPEG":
            # verify() does not look at JPEG data; a decode at 1/8 scale (draft mode) is cheap and
            # finds files cut off while copying.
            with _open_checked(p) as img:
                img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                img.load()
    except LoratuiError:
        raise
    except Exception as exc:
        raise LoratuiError(f"cannot read image {p}: {exc}", hint=_UNREADABLE_HINT, where=str(p)) from None
    if w <= 0 or h <= 0:
        raise LoratuiError(f"image has no pixels ({w}x{h}): {p}", hint=_UNREADABLE_HINT, where=str(p))
    if orientation in _SWAPPING_ORIENTATIONS:
        return h, w
    return w, h


def open_image(path: str | os.PathLike):
    """Decode an image to an 8-bit RGB PIL image, EXIF-rotated, transparency flattened onto white."""
    from PIL import ImageOps

    p = Path(path)
    img = _open_checked(p)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except LoratuiError:
        raise
    except Exception as exc:  # truncated data, bad decoder state: name the image, never a traceback
        raise LoratuiError(f"cannot decode image {p}: {exc}", hint=_UNREADABLE_HINT, where=str(p)) from None


def to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    mode = img.mode
    if mode == "RGB":
        if "transparency" in img.info:  # RGB with a colour key
            return _flatten(img.convert("RGBA"))
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten(img.convert("RGBA"))
    if mode in ("P", "L", "1") and "transparency" in img.info:
        return _flatten(img.convert("RGBA"))
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_rgb(img)
    # CMYK, YCbCr, greyscale, palette without transparency, 1-bit: Pillow converts these directly.
    return img.convert("RGB")


def _flatten(rgba):
    from PIL import Image

    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _as_uint8(img):
    import numpy as np

    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.size and arr.max() > 255):
        # 16-bit samples: map 0..65535 onto 0..255 (Pillow's own convert would clip instead).
        arr = arr / 257.0
    elif img.mode == "F" and arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _high_depth_to_rgb(img):
    from PIL import Image

    return Image.fromarray(_as_uint8(img), "L").convert("RGB")
