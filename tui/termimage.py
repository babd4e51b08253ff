"""How images reach the terminal: Kitty graphics, Sixel, Unicode half-blocks, or not at all.

Rendering is textual-image's (https://github.com/lnqs/textual-image). Its own automatic detection runs
when `textual_image.renderable` is first imported: it writes a Sixel query (DA1, `ESC [ c`) and a
Kitty graphics query and waits 0.1 s for each answer, and the import itself pulls in numpy (~0.25 s).
Both used to happen before the first frame. Now nothing of textual-image is imported until a picture is
first drawn, and `auto` decides from the environment the terminal sets, with no query at all:

- Kitty graphics (with the Unicode placeholders textual-image draws): kitty (`KITTY_WINDOW_ID`,
  `TERM=xterm-kitty`) and Ghostty (`TERM=xterm-ghostty`, `TERM_PROGRAM=ghostty`).
- Sixel: WezTerm, Konsole, foot, mlterm, iTerm2, Contour (textual-image's own note: Konsole and
  WezTerm answer the Kitty query but only its Sixel output works there).
- Inside tmux or screen (`TMUX`, `TERM=screen*`/`tmux*`) graphics do not pass through reliably:
  half-blocks. Anything else: half-blocks, which work in every terminal.

`TERM` is what SSH forwards, so `TERM` rules come first; the other variables are set by local
terminals. `--images=kitty|sixel` forces a protocol the environment does not reveal.
- `off`: textual-image is never imported; pictures show as their file name and size.

The first `widget_class()` imports textual-image with stdout looking like a pipe, so its import-time
detection never writes to the terminal Textual owns; the cell size in pixels comes from the
TIOCGWINSZ ioctl where the terminal reports it (10x20 otherwise).
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

MODES = ("auto", "kitty", "sixel", "halfblock", "off")
_resolved: str | None = None

# (variable, prefix of its value, renderer): the first match wins; "" matches any value.
_ENV_RULES: tuple[tuple[str, str, str], ...] = (
    ("TMUX", "", "halfblock"),
    ("TERM", "screen", "halfblock"),
    ("TERM", "tmux", "halfblock"),
    ("TERM", "xterm-kitty", "kitty"),
    ("TERM", "xterm-ghostty", "kitty"),
    ("TERM", "wezterm", "sixel"),
    ("TERM", "foot", "sixel"),
    ("TERM", "mlterm", "sixel"),
    ("TERM", "contour", "sixel"),
    ("KITTY_WINDOW_ID", "", "kitty"),
    ("TERM_PROGRAM", "ghostty", "kitty"),
    ("TERM_PROGRAM", "WezTerm", "sixel"),
    ("TERM_PROGRAM", "iTerm.app", "sixel"),
    ("TERM_PROGRAM", "contour", "sixel"),
    ("KONSOLE_VERSION", "", "sixel"),
    ("MLTERM", "", "sixel"),
)


def detect(env: Mapping[str, str] | None = None) -> str:
    """The renderer the terminal described by `env` (default: os.environ) supports, no query sent.

    Returns:
        "kitty", "sixel" or "halfblock" (see the module docstring for the rules).
    """
    env = os.environ if env is None else env
    for name, prefix, mode in _ENV_RULES:
        value = env.get(name)
        if value and value.startswith(prefix):
            return mode
    return "halfblock"


@contextmanager
def _stdout_not_a_tty():
    """Make textual-image's import-time `sys.__stdout__.isatty()` false, so it sends no query."""
    saved = sys.__stdout__
    sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.__stdout__ = saved


def _is_tty(stream) -> bool:
    try:
        return bool(stream) and stream.isatty()
    except (ValueError, OSError):
        return False


def _cell_size() -> None:
    """Fill textual-image's cached cell size (pixels per cell) from the ioctl, else 10x20."""
    from textual_image import _terminal

    if hasattr(_terminal.get_cell_size, "_result"):
        return
    try:
        rows, cols, px_w, px_h = _terminal.get_tiocgwinsz() if _is_tty(sys.__stdout__) else (0, 0, 0, 0)
        if rows and cols and px_w and px_h:
            _terminal.get_cell_size._result = _terminal.CellSize(px_w // cols, px_h // rows)
    except Exception as exc:  # a closed or odd terminal: the library's default size is fine
        log.debug("cell size unknown: %s", exc)
    if not hasattr(_terminal.get_cell_size, "_result"):
        _terminal.get_cell_size._result = _terminal.CellSize(10, 20)


def setup(mode: str = "auto", env: Mapping[str, str] | None = None) -> str:
    """Choose the renderer (cheap: imports nothing, queries nothing). Returns the resolved mode.

    Args:
        mode: one of MODES.
        env: the environment to detect from in `auto` (default: os.environ).
    Returns:
        "kitty", "sixel", "halfblock" or "off".
    Raises:
        ValueError: an unknown mode (the message lists the valid ones).
    """
    global _resolved
    if mode not in MODES:
        raise ValueError(f"--images={mode!r}: expected one of {', '.join(MODES)}")
    _resolved = detect(env) if mode == "auto" else mode
    return _resolved


def current() -> str:
    """The renderer in use ("halfblock" until `setup` chose another)."""
    return _resolved or "halfblock"


def widget_class():
    """The textual-image widget class of the current renderer, or None when images are off.

    The first call imports textual-image (numpy included) without letting it query the terminal.
    """
    mode = current()
    if mode == "off":
        return None
    with _stdout_not_a_tty():
        from textual_image import widget  # import-time detection sees no terminal
    _cell_size()
    return {"kitty": widget.TGPImage, "sixel": widget.SixelImage}.get(mode, widget.HalfcellImage)
