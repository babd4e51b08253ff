"""Turn an image file into one WD14 tagger input: square, white-padded, BGR, float32 0..255, HWC.

The steps follow SmilingWolf's taggers (docs/formats.md, WD14 tagger): transparency composited onto white, RGB to
BGR, padded to a centred square with white, resized to the model size, no normalisation. The image
is scaled before padding (longest side to `size`) rather than padded at full size and then scaled:
the result is the same picture, and a 6000 px photo is not first copied into a 6000x6000 canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import LoratuiError

WHITE = (255, 255, 255)


def to_rgb_on_white(img: Image.Image) -> Image.Image:
    """RGB image with any transparency (RGBA, LA, palette with a transparent index) laid on white."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, WHITE + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Scale the longest side to `size` and centre the image on a white size x size square."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        # Area averaging when shrinking (like cv2.INTER_AREA in sd-scripts), Lanczos when enlarging.
        method = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
        img = img.resize((nw, nh), method)
    if (nw, nh) == (size, size):
        return img
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def image_to_array(img: Image.Image, size: int) -> np.ndarray:
    """[size, size, 3] float32 BGR 0..255 from a PIL image."""
    square = fit_square(to_rgb_on_white(img), size)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read an image file into a tagger input, raising LoratuiError that names the image."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            # JPEG can decode at 1/2, 1/4, 1/8 scale for free; never below the model size.
            img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img)
            img.load()
            return image_to_array(img, size)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise LoratuiError(
            f"cannot read the image: {exc}",
            hint="remove or re-save the file (it may be truncated or not an image)",
            where=str(path),
        ) from exc


def stack(arrays: list[np.ndarray]) -> np.ndarray:
    """A [N, size, size, 3] batch."""
    return np.stack(arrays, axis=0)
