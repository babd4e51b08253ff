"""How images reach the terminal: Kitty graphics, Sixel, Unicode half-blocks, or not at all.

Rendering is textual-image's (https://github.com/lnqs/textual-image). Its automatic detection runs when
`textual_image.renderable` is first imported: it writes a Sixel query (DA1, `ESC [ c`) and a Kitty
graphics query and waits 0.1 s for each answer, so it must happen before Textual owns the terminal,
and it must be allowed only where it cannot hang or crash:

- `auto`: detection only when stdin and stdout are both terminals (the library's reader needs a tty
  on stdin; a pipe raised termios.error); any failure falls back to half-blocks. A terminal that
  answers nothing costs the two 0.1 s timeouts, never a hang.
- `kitty` / `sixel` / `halfblock`: no query at all (the import runs with stdout looking like a pipe);
  the pixel size of a cell still comes from the TIOCGWINSZ ioctl where the terminal reports it.
- `off`: textual-image is never imported; pictures show as their file name and size.

`setup(mode)` is called once by `loratui` before the app starts; without it (tests, embedding)
the renderer is half-blocks, which is deterministic and works in every terminal, inside tmux too.
"""

from __future__ import annotations

import io
import logging
import sys
from contextlib import contextmanager

log = logging.getLogger(__name__)

MODES = ("auto", "kitty", "sixel", "halfblock", "off")
_resolved: str | None = None


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


def _cell_size(query: bool) -> None:
    """Fill textual-image's cached cell size (pixels per cell): ioctl, else a query, else 10x20."""
    from textual_image import _terminal

    if hasattr(_terminal.get_cell_size, "_result"):
        return
    try:
        if query:
            _terminal.get_cell_size()
            return
        rows, cols, px_w, px_h = _terminal.get_tiocgwinsz() if _is_tty(sys.__stdout__) else (0, 0, 0, 0)
        if rows and cols and px_w and px_h:
            _terminal.get_cell_size._result = _terminal.CellSize(px_w // cols, px_h // rows)
    except Exception as exc:  # a closed or odd terminal: the library's default size is fine
        log.debug("cell size unknown: %s", exc)
    if not hasattr(_terminal.get_cell_size, "_result"):
        _terminal.get_cell_size._result = _terminal.CellSize(10, 20)


def setup(mode: str = "auto") -> str:
    """Choose the renderer; call before the Textual app starts. Returns the resolved mode.

    Args:
        mode: one of MODES.
    Returns:
        "kitty", "sixel", "halfblock" or "off".
    Raises:
        ValueError: an unknown mode (the message lists the valid ones).
    """
    global _resolved
    if mode not in MODES:
        raise ValueError(f"--images={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        _resolved = "off"
        return _resolved
    if mode == "auto" and _is_tty(sys.__stdin__) and _is_tty(sys.__stdout__):
        try:
            _cell_size(query=True)
            from textual_image import renderable

            chosen = renderable.Image
            _resolved = {
                renderable.SixelImage: "sixel",
                renderable.TGPImage: "kitty",
            }.get(chosen, "halfblock")
            return _resolved
        except Exception as exc:  # detection must never keep the UI from starting
            log.warning("terminal image detection failed (%s): using half-blocks", exc)
    _cell_size(query=False)
    with _stdout_not_a_tty():
        import textual_image.renderable  # noqa: F401  (import-time detection sees no terminal)
    _resolved = "halfblock" if mode == "auto" else mode
    return _resolved


def current() -> str:
    """The renderer in use ("halfblock" until `setup` chose another)."""
    return _resolved or "halfblock"


def widget_class():
    """The textual-image widget class of the current renderer, or None when images are off."""
    mode = current()
    if mode == "off":
        return None
    if _resolved is None:
        setup("halfblock")
    from textual_image import widget

    return {"kitty": widget.TGPImage, "sixel": widget.SixelImage}.get(mode, widget.HalfcellImage)
