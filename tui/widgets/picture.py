"""Picture: the one image widget of the TUI (samples, dataset browser, thumbnails).

It shows a file (or nothing) with the renderer that tui.termimage chose (Kitty, Sixel or half-blocks
through textual-image), or, with `--images=off`, a line naming the file. Decoding and downscaling run
in a thread worker (tui.thumbs, cached), so a large PNG never stalls the UI; a newer `show()`
cancels the older load (exclusive worker). A file that cannot be read shows its error in place.

`draw` is an optional function applied to the downscaled RGB image in the worker (e.g. the dataset
browser outlines the crop): it gets the thumbnail and the original size, and returns an image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from tui import termimage, thumbs

Draw = Callable[[PILImage.Image], PILImage.Image]


class Picture(Widget):
    """An image from a file, fitted to the widget, aspect ratio kept."""

    DEFAULT_CSS = """
    Picture { height: 1fr; width: 1fr; align: center middle; }
    Picture > .picture-image { width: auto; height: auto; }
    Picture > .picture-note { width: 1fr; height: auto; color: $text-muted; content-align: center middle; }
    """

    @dataclass
    class Shown(Message):
        """The picture finished loading `path` (or failed: `error`)."""

        picture: Picture
        path: str | None
        error: str | None = None

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.path: str | None = str(path) if path else None
        self.draw: Draw | None = None
        self.shown_path: str | None = None
        """The file currently on screen (None while loading or when empty)."""
        self.error: str | None = None
        self._box: tuple[int, int] = (0, 0)
        self._image_widget = None
        self._note = Static("", classes="picture-note", markup=False)
        self._note_text = ""

    def compose(self) -> ComposeResult:
        cls = termimage.widget_class()
        if cls is not None:
            self._image_widget = cls(classes="picture-image")
            yield self._image_widget
        yield self._note

    def show(self, path: str | Path | None, draw: Draw | None = None) -> None:
        """Show another file (None: nothing); loads in the background."""
        self.path = str(path) if path else None
        self.draw = draw
        self._box = (0, 0)
        self._reload()

    def on_resize(self) -> None:
        self._reload()

    def on_mount(self) -> None:
        self._reload()

    def _pixel_box(self) -> tuple[int, int]:
        cols, rows = self.size.width, self.size.height
        mode = termimage.current()
        if mode in ("kitty", "sixel"):
            from textual_image._terminal import get_cell_size

            cell = get_cell_size()
            return (cols * cell.width, rows * cell.height)
        return (cols, rows * 2)  # half-blocks: one pixel per column, two per row

    def _reload(self) -> None:
        if not self.is_mounted:
            return
        if not self.path:
            self.shown_path = None
            self.error = None
            if self._image_widget is not None:
                self._image_widget.image = None
            self._note_text = ""
            self._note.update("")
            return
        if termimage.current() == "off":
            self.shown_path = self.path
            self._note_text = Path(self.path).name
            self._note.update(self._note_text)
            self.post_message(self.Shown(self, self.path))
            return
        box = self._pixel_box()
        if box[0] < 2 or box[1] < 2 or box == self._box:
            return
        self._box = box
        self._load(self.path, box, self.draw)

    @work(thread=True, exclusive=True, group="picture", exit_on_error=False)
    def _load(self, path: str, box: tuple[int, int], draw: Draw | None) -> None:
        try:
            image = thumbs.load(path, box)
            if draw is not None:
                image = draw(image.copy())
            error = None
        except thumbs.ThumbnailError as exc:
            image, error = None, str(exc)
        self.app.call_from_thread(self._loaded, path, image, error)

    def _loaded(self, path: str, image: PILImage.Image | None, error: str | None) -> None:
        if path != self.path:
            return  # a newer show() superseded this load
        self.error = error
        self.shown_path = path if image is not None else None
        if self._image_widget is not None:
            self._image_widget.image = image
        if (error or "") != self._note_text:
            self._note_text = error or ""
            self._note.update(self._note_text)
        self.post_message(self.Shown(self, path, error))
