"""Terminal image renderer choice (tui.termimage) in real pseudo-terminals, and the Picture widget."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from textual.app import App

from tui import termimage, thumbs
from tui.widgets.picture import Picture

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import sys, time; from tui import termimage; t = time.monotonic(); "
    "mode = termimage.setup({mode!r}); print('MODE', mode, round(time.monotonic() - t, 2), "
    "'textual_image' in sys.modules, 'numpy' in sys.modules, flush=True)"
)
TERMINAL_VARS = ("TMUX", "TERM_PROGRAM", "KITTY_WINDOW_ID", "KONSOLE_VERSION", "MLTERM")


def _run_in_pty(mode: str, term: dict[str, str] | None = None, probe: str = PROBE) -> tuple[str, bytes]:
    """Run the probe with stdout (and stdin) on a pty whose other end never answers a query."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_VARS}
    env.update({"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", **(term or {})})
    proc = subprocess.Popen(
        [sys.executable, "-c", probe.format(mode=mode)],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None or select.select([master], [], [], 0)[0]:
        assert time.monotonic() < deadline, "terminal image detection hung"
        if select.select([master], [], [], 0.05)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    os.close(master)
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read().decode()
    found = re.search(r"MODE \S+ [\d.]+ \w+ \w+", seen.decode(errors="replace"))
    assert found, seen
    return found.group(0), seen


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ({}, "halfblock"),  # a plain xterm-256color: nothing to go on
        ({"TERM": "xterm-kitty"}, "kitty"),  # what SSH forwards from kitty
        ({"KONSOLE_VERSION": "230804"}, "sixel"),
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-1000/default,1,0"}, "halfblock"),
    ],
)
def test_auto_decides_from_the_environment_without_a_query_or_textual_image(term, expected):
    line, seen = _run_in_pty("auto", term=term)
    _, mode, seconds, textual_image_loaded, numpy_loaded = line.split()
    assert mode == expected
    assert b"\x1b[c" not in seen and b"\x1b_G" not in seen  # no query before the first frame
    assert textual_image_loaded == "False" and numpy_loaded == "False"  # nor their 0.25 s import
    assert float(seconds) < 0.1


@pytest.mark.parametrize("mode", ["kitty", "sixel", "halfblock"])
def test_an_explicit_mode_never_queries_the_terminal(mode):
    line, seen = _run_in_pty(mode)
    assert line.split()[1] == mode
    assert b"\x1b[" not in seen.split(b"MODE")[0]


def test_the_first_picture_imports_textual_image_without_querying_the_terminal():
    probe = (
        "import sys, time; from tui import termimage; termimage.setup({mode!r}); "
        "cls = termimage.widget_class(); print('MODE', cls.__name__, 0, 'textual_image' in sys.modules, "
        "'numpy' in sys.modules, flush=True)"
    )
    line, seen = _run_in_pty("auto", term={"TERM": "xterm-kitty"}, probe=probe)
    assert line.split()[1:2] == ["TGPImage"] and line.split()[3] == "True"
    assert b"\x1b[c" not in seen and b"\x1b_G" not in seen


def test_detect_rules_of_more_terminals():
    assert termimage.detect({"TERM": "foot-extra"}) == "sixel"
    assert termimage.detect({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}) == "sixel"
    assert termimage.detect({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3"}) == "kitty"
    assert termimage.detect({"TERM": "screen-256color", "KITTY_WINDOW_ID": "3"}) == "halfblock"
    assert termimage.detect({}) == "halfblock"


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto, kitty, sixel, halfblock, off"):
        termimage.setup("ascii")


class _PictureApp(App):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def compose(self):
        yield Picture(self.path)


async def _shown(pilot, picture) -> None:
    for _ in range(100):
        if picture.shown_path or picture.error:
            return
        await pilot.pause(0.05)
    raise AssertionError("picture never loaded")


async def test_picture_draws_half_blocks_in_the_image_colours(tmp_path):
    path = tmp_path / "two.png"
    im = Image.new("RGB", (64, 64), (255, 0, 0))
    im.paste((0, 0, 255), (0, 32, 64, 64))  # top half red, bottom half blue
    im.save(path)
    app = _PictureApp(path)
    async with app.run_test(size=(40, 20)) as pilot:
        picture = app.query_one(Picture)
        await _shown(pilot, picture)
        await pilot.pause()
        inner = picture._image_widget
        assert inner.size.height > 2 and inner.size.width > 2
        top = list(inner.render_line(0))[0]
        bottom = list(inner.render_line(inner.size.height - 1))[0]
        assert top.text == "▀" and str(top.style) == "#ff0000 on #ff0000"
        assert str(bottom.style) == "#0000ff on #0000ff"


async def test_picture_reports_an_unreadable_file_in_place(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    app = _PictureApp(path)
    async with app.run_test(size=(40, 10)) as pilot:
        picture = app.query_one(Picture)
        await _shown(pilot, picture)
        assert picture.shown_path is None and "broken.png" in picture.error


def test_thumbnails_are_cached_until_the_file_changes(tmp_path):
    thumbs.clear()
    path = tmp_path / "a.png"
    Image.new("RGB", (400, 200), (0, 255, 0)).save(path)
    first = thumbs.load(path, (40, 40))
    assert first.size == (40, 20)
    assert thumbs.load(path, (40, 40)) is first and thumbs.stats["hits"] == 1
    Image.new("RGB", (200, 400), (0, 0, 0)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert thumbs.load(path, (40, 40)).size == (20, 40)
