"""Image reading: EXIF rotation, transparency on white, unusual modes, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.data.images import image_size, is_image, open_image
from engine.errors import LoratuiError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _half_and_half(w, h):
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2 :] = BLUE
    return Image.fromarray(arr)


def test_suffixes_are_case_insensitive():
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.webp", "e.BMP", "f.gif", "g.tif", "h.TIFF"):
        assert is_image(name), name
    for name in ("a.txt", "b.caption", "c.psd", "png"):
        assert not is_image(name), name


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    path = tmp_path / f"rotated{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    _half_and_half(40, 20).save(path, exif=exif.tobytes(), quality=95)

    assert image_size(path) == (20, 40)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (20, 40)
    # The stored left (red) half becomes the displayed top half.
    top = np.asarray(img)[:15].reshape(-1, 3).mean(0)
    bottom = np.asarray(img)[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_is_flattened_onto_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[:, :4] = (255, 0, 0, 255)  # opaque red
    arr[:, 4:] = (0, 0, 0, 0)  # fully transparent black
    arr[0, 0] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "cutout.png"
    Image.fromarray(arr, "RGBA").save(path)
    img = open_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == RED
    assert img.getpixel((6, 6)) == WHITE
    r, g, b = img.getpixel((0, 0))
    assert 120 <= r <= 135 and 120 <= g <= 135 and b == 255


def test_la_and_palette_transparency_become_white(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((0, 0), (0, 255))
    la.save(tmp_path / "la.png")
    img = open_image(tmp_path / "la.png")
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((3, 3)) == WHITE

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 255, 0] + [255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png", transparency=0)
    img = open_image(tmp_path / "pal.png")
    assert img.getpixel((1, 1)) == RED  # opaque palette entry keeps its colour
    assert img.getpixel((0, 0)) == WHITE  # the transparent index (green) becomes white


def test_palette_and_greyscale_without_transparency(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0] + [10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "pal.gif")
    assert open_image(tmp_path / "pal.gif").getpixel((2, 2)) == (10, 200, 30)

    Image.new("L", (4, 4), 77).save(tmp_path / "grey.bmp")
    img = open_image(tmp_path / "grey.bmp")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77)


def test_cmyk_becomes_rgb(tmp_path):
    path = tmp_path / "print.tif"
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(path)  # no cyan, full magenta+yellow: red
    img = open_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((3, 3)) == RED


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 32768
    arr[1, 1] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    img = open_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((3, 3)) == WHITE
    assert img.getpixel((0, 0)) == (128, 128, 128)
    assert img.getpixel((1, 1)) == (0, 0, 0)


def test_zero_byte_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    for reader in (image_size, open_image):
        with pytest.raises(LoratuiError) as info:
            reader(path)
        assert info.value.message == f"image file is empty (0 bytes): {path}"
        assert info.value.where == str(path)
        assert "copy it again or delete it" in info.value.hint


def test_corrupt_and_truncated_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a picture at all" * 10)
    with pytest.raises(LoratuiError) as info:
        image_size(junk)
    assert info.value.message == f"not a readable image: {junk}"
    assert "PNG or JPEG" in info.value.hint

    good = tmp_path / "good.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(good)
    data = good.read_bytes()
    for suffix in (".jpg", ".png"):
        if suffix == ".png":
            Image.open(good).save(tmp_path / "good.png")
            data = (tmp_path / "good.png").read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(LoratuiError) as info:
            image_size(cut)
        assert str(cut) in info.value.message and info.value.where == str(cut)
        with pytest.raises(LoratuiError):
            open_image(cut)
