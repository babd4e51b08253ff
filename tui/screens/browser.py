"""BrowserScreen: walk the dataset image by image, fix captions, take images out.

For the highlighted image: the picture with the crop training applies outlined (a dimmed frame
when the crop cuts something), its size, bucket and repeats, the caption as training sees it (the
trigger word first; tags that keep_tokens holds in place in bold, the ones shuffle_tags moves
plain), the caption file's text in an editor, and the check's problems for it. The data comes from
engine.data.browse (torch-free, the engine's own scan, caption and bucket code), read in a worker.

Keys: ctrl+s / F2 writes the edited caption (atomic; the text cache is keyed by the caption text,
so the next run encodes only that caption), F8 moves the image and its caption to `excluded/`
(never deleted; scans skip that folder), `/` filters (text, `tag:NAME`, `problem:KIND`), `t` shows
the tag frequency table (enter on a tag lists its images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import ImageDraw
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TextArea

from engine.data.browse import BrowseEntry, DatasetView, browse_dataset, caption_fields
from engine.data.edit import exclude_image, write_caption
from engine.errors import LoratuiError
from tui.widgets.picture import Picture

PICTURE_DELAY = 0.08
"""Seconds the cursor must rest on an image before its picture is loaded."""


def matches(entry: BrowseEntry, query: str) -> bool:
    """Filter rule: `tag:NAME` (exact tag), `problem:KIND` (problem prefix), else text in name/caption."""
    query = query.strip()
    if not query:
        return True
    if query.startswith("tag:"):
        return query[4:].strip() in entry.tags
    if query.startswith("problem:"):
        kind = query[8:].strip().lower()
        return any(p.lower().startswith(kind) for p in entry.problems) if kind else bool(entry.problems)
    q = query.lower()
    return q in entry.rel.lower() or q in entry.caption.lower()


def crop_drawer(entry: BrowseEntry):
    """A Picture `draw` function: dim what the crop cuts off and outline what training keeps."""
    left, top, right, bottom = entry.crop

    def draw(image):
        sx, sy = image.width / max(1, entry.width), image.height / max(1, entry.height)
        box = (round(left * sx), round(top * sy), round(right * sx) - 1, round(bottom * sy) - 1)
        if (left, top, right, bottom) == (0, 0, entry.width, entry.height):
            return image
        shade = image.point(lambda v: v // 3)
        shade.paste(image.crop(box), box[:2])
        ImageDraw.Draw(shade).rectangle(box, outline=(255, 220, 0))
        return shade

    return draw


class BrowserScreen(Screen):
    """The dataset browser of one run config."""

    CSS_PATH = "browser.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="browser_back"),
        Binding("ctrl+s,f2", "save_caption", "Save caption", id="browser_save", priority=True),
        Binding("f8", "exclude", "Exclude image", id="browser_exclude"),
        Binding("slash", "focus_filter", "Filter", id="browser_filter"),
        Binding("t", "toggle_tags", "Tags", id="browser_tags"),
    ]

    def __init__(self, cfg, report: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.report = report
        self.view: DatasetView | None = None
        self.shown: list[BrowseEntry] = []
        self.current: BrowseEntry | None = None
        self.filter_text = ""
        self._picture_timer = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="browser-list"):
                yield Input(placeholder="filter: text, tag:NAME, problem:KIND  (/)", id="browser-filter")
                yield DataTable(id="browser-images", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="browser-tags", cursor_type="row", classes="-hidden")
                yield Static("Reading the dataset...", id="browser-status", markup=False)
            with Vertical(id="browser-detail"):
                yield Picture(id="browser-picture")
                yield Static("", id="browser-info")
                yield Static("", id="browser-caption")
                yield TextArea("", id="browser-edit", soft_wrap=True, show_line_numbers=False)
                yield Static("", id="browser-problems")
        yield Footer()

    def on_mount(self) -> None:
        images = self.query_one("#browser-images", DataTable)
        images.add_column("image", key="image")
        images.add_column("bucket", key="bucket")
        images.add_column("!", key="problems")
        tags = self.query_one("#browser-tags", DataTable)
        tags.add_column("tag", key="tag")
        tags.add_column("images", key="count")
        self.load()

    # --- data ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="browse", exit_on_error=False)
    def load(self) -> None:
        try:
            view, error = browse_dataset(self.cfg, self.report), None
        except LoratuiError as exc:
            view, error = None, exc
        except OSError as exc:
            view, error = None, LoratuiError(str(exc), hint="check dataset.dirs")
        self.app.call_from_thread(self._loaded, view, error)

    def _loaded(self, view: DatasetView | None, error: LoratuiError | None) -> None:
        if view is None:
            text = f"{error.message}" + (f"\nhint: {error.hint}" if error and error.hint else "")
            self.query_one("#browser-status", Static).update(text, layout=False)
            return
        self.view = view
        self.refill()
        self.query_one("#browser-images", DataTable).focus()

    def refill(self) -> None:
        """Rebuild the image list from the filter (and the tag table)."""
        view = self.view
        if view is None:
            return
        self.shown = [e for e in view.entries if matches(e, self.filter_text)]
        table = self.query_one("#browser-images", DataTable)
        table.clear()
        for entry in self.shown:
            table.add_row(*self._cells(entry), key=str(entry.path))
        tags = self.query_one("#browser-tags", DataTable)
        tags.clear()
        for tag, count in view.tag_frequency():
            tags.add_row(tag, str(count), key=tag)
        bad = sum(1 for e in view.entries if e.problems)
        status = f"{len(self.shown)} of {len(view.entries)} images · {bad} with problems"
        if view.unreadable:
            status += f" · {len(view.unreadable)} unreadable"
        self.query_one("#browser-status", Static).update(status, layout=False)
        if self.shown:
            self._select(self.shown[0])
        else:
            self._select(None)

    @staticmethod
    def _cells(entry: BrowseEntry) -> tuple:
        return (entry.rel, f"{entry.bucket[0]}x{entry.bucket[1]}", str(len(entry.problems) or ""))

    def _select(self, entry: BrowseEntry | None) -> None:
        self.current = entry
        picture = self.query_one(Picture)
        editor = self.query_one("#browser-edit", TextArea)
        if entry is None:
            if self._picture_timer is not None:
                self._picture_timer.stop()
            picture.show(None)
            for name in ("#browser-info", "#browser-caption", "#browser-problems"):
                self.query_one(name, Static).update("", layout=False)
            editor.load_text("")
            return
        # The picture waits until the cursor rests: holding the down key through 1,000 images must
        # not decode and draw each one (the text fields below are cheap and follow at once).
        if self._picture_timer is not None:
            self._picture_timer.stop()
        self._picture_timer = self.set_timer(
            PICTURE_DELAY, lambda: picture.show(entry.path, draw=crop_drawer(entry))
        )
        left, top, right, bottom = entry.crop
        whole = (left, top, right, bottom) == (0, 0, entry.width, entry.height)
        crop = "whole image" if whole else f"crop {left},{top}-{right},{bottom}"
        info = Text(f"{entry.rel}\n", style="bold")
        info.append(
            f"{entry.width}x{entry.height} → bucket {entry.bucket[0]}x{entry.bucket[1]} · {crop}"
            f" · repeats {entry.repeats}"
        )
        self.query_one("#browser-info", Static).update(info, layout=False)
        self._show_caption(entry)
        text = ""
        if entry.caption_file is not None and entry.caption_file.is_file() and not entry.error:
            from engine.data.captions import read_caption_file

            try:
                text = read_caption_file(entry.caption_file)
            except LoratuiError as exc:  # changed on disk since the scan
                entry.error = exc.message
        editor.load_text(text)
        problems = Text()
        for p in entry.problems:
            problems.append(f"⚠ {p}\n", style="yellow")
        self.query_one("#browser-problems", Static).update(
            problems or Text("no problems", style="dim"), layout=False
        )

    def _show_caption(self, entry: BrowseEntry) -> None:
        text = Text("trained as: ", style="dim")
        if entry.fixed:
            text.append(", ".join(entry.fixed), style="bold")
        if entry.rest:
            text.append(", " if entry.fixed else "")
            text.append(", ".join(entry.rest))
        if not entry.caption:
            text.append("(empty caption)", style="italic")
        if entry.source != "file":
            text.append(f"  [{entry.source}]", style="dim")
        self.query_one("#browser-caption", Static).update(text, layout=False)

    # --- events -------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#browser-images")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.shown):
            self._select(self.shown[event.cursor_row])

    @on(DataTable.RowSelected, "#browser-tags")
    def _tag_chosen(self, event: DataTable.RowSelected) -> None:
        self.set_filter(f"tag:{event.row_key.value}")
        self.query_one("#browser-images", DataTable).focus()

    @on(Input.Submitted, "#browser-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.set_filter(event.value)
        self.query_one("#browser-images", DataTable).focus()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        box = self.query_one("#browser-filter", Input)
        if box.value != text:
            box.value = text
        self.refill()

    # --- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_focus_filter(self) -> None:
        self.query_one("#browser-filter", Input).focus()

    def action_toggle_tags(self) -> None:
        tags = self.query_one("#browser-tags", DataTable)
        tags.toggle_class("-hidden")
        if not tags.has_class("-hidden"):
            tags.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_tags", "focus_filter") and isinstance(self.focused, (TextArea, Input)):
            return False  # those keys are typing there
        return True

    def action_save_caption(self) -> None:
        entry = self.current
        if entry is None:
            return
        if self.cfg.dataset.caption != "file":
            self.notify(
                f'dataset.caption is "{self.cfg.dataset.caption}": captions come from the config, not files',
                severity="warning",
            )
            return
        text = self.query_one("#browser-edit", TextArea).text
        if entry.error:
            self.notify(
                f"{entry.caption_file} cannot be read ({entry.error}); save it as UTF-8 first, "
                "so its text is not replaced unseen",
                severity="warning",
                markup=False,
            )
            return
        try:
            path = write_caption(entry.path, text, self.cfg.dataset.caption_extensions)
        except LoratuiError as exc:
            self.notify(f"{exc.message}\nhint: {exc.hint}", severity="error", markup=False)
            return
        for key, value in caption_fields(entry.path, self.cfg).items():
            setattr(entry, key, value)
        entry.problems = [p for p in entry.problems if not p.startswith(("missing caption", "empty caption"))]
        if not entry.caption and entry.source == "file":
            entry.problems.append("empty caption: the caption file is empty")
        self._update_row(entry)
        self._show_caption(entry)
        self.notify(f"Saved {path.name}", markup=False, timeout=3)

    def _update_row(self, entry: BrowseEntry) -> None:
        table = self.query_one("#browser-images", DataTable)
        for column, value in zip(("image", "bucket", "problems"), self._cells(entry)):
            table.update_cell(str(entry.path), column, value)
        tags = self.query_one("#browser-tags", DataTable)
        tags.clear()
        for tag, count in self.view.tag_frequency():
            tags.add_row(tag, str(count), key=tag)

    def action_exclude(self) -> None:
        entry = self.current
        if entry is None or self.view is None:
            return
        try:
            moved = exclude_image(entry.path, entry.root, self.cfg.dataset.caption_extensions)
        except LoratuiError as exc:
            self.notify(f"{exc.message}\nhint: {exc.hint}", severity="error", markup=False)
            return
        table = self.query_one("#browser-images", DataTable)
        row = table.cursor_row
        self.view.entries.remove(entry)
        self.shown.remove(entry)
        table.remove_row(str(entry.path))
        self.notify(f"Moved {entry.rel} to {moved[0].parent}", markup=False, timeout=4)
        if self.shown:
            row = min(row, len(self.shown) - 1)
            table.move_cursor(row=row)
            self._select(self.shown[row])
        else:
            self._select(None)
        self.query_one("#browser-status", Static).update(
            f"{len(self.shown)} of {len(self.view.entries)} images · {entry.rel} excluded", layout=False
        )

    @property
    def entry_paths(self) -> list[Path]:
        return [e.path for e in self.shown]
