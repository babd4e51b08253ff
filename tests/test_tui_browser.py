"""The dataset browser (half-block renderer): captions as trained, crops, edits, exclusion, filters."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import DataTable, TextArea

from engine.config import load_config_text
from engine.data.browse import browse_dataset
from engine.data.buckets import crop_region
from engine.data.edit import write_caption
from engine.data.scan import scan_dataset
from tests.train_util import config_text, of_type, run_in_process
from tests.tui_support import wait_until
from tui.screens.browser import BrowserScreen
from tui.widgets.picture import Picture


def _cfg(data, tmp_path, **dataset):
    return load_config_text(
        config_text(tmp_path / "model", data, dataset={"keep_tokens": 1, "shuffle_tags": True, **dataset}),
        workspace=tmp_path,
    )


class _BrowserApp(App):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def on_mount(self) -> None:
        self.push_screen(BrowserScreen(self.cfg))


def test_crop_region_is_what_fit_to_bucket_keeps():
    from PIL import Image

    from engine.data.buckets import fit_to_bucket

    img = Image.new("RGB", (200, 100))
    img.paste((255, 0, 0), (50, 0, 150, 100))  # the centre 100x100 is red
    assert crop_region((200, 100), (64, 64)) == (50, 0, 150, 100)
    fitted, _, _ = fit_to_bucket(img, (64, 64))
    # Nothing of the black sides survives the crop (Lanczos rings a little at the edges).
    assert min(fitted.getpixel((x, 32))[0] for x in range(64)) > 200
    assert crop_region((200, 100), (64, 64), resize="pad") == (0, 0, 200, 100)


def test_browse_entries_show_the_caption_as_trained(demo_dataset, tmp_path):
    removed = sorted((demo_dataset / "extra").glob("*.txt"))[0]
    removed.unlink()
    view = browse_dataset(_cfg(demo_dataset, tmp_path))
    assert len(view.entries) == 12
    first = view.entries[0]
    assert first.caption.startswith("shapes, ") and first.fixed == ["shapes"]  # trigger word kept first
    assert first.rest and first.rest[0] in first.caption
    missing = [e for e in view.entries if any(p.startswith("missing caption") for p in e.problems)]
    assert len(missing) == 1 and missing[0].rel == f"demo-data/extra/{removed.stem}.png"
    freq = dict(view.tag_frequency())
    assert freq["shapes"] == 12  # counted once per image


async def test_browser_edits_a_caption_and_excludes_an_image(demo_dataset, tmp_path):
    cfg = _cfg(demo_dataset, tmp_path)
    app = _BrowserApp(cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen) and app.screen.view is not None)
        screen = app.screen
        table = screen.query_one("#browser-images", DataTable)
        assert table.row_count == 12
        picture = screen.query_one(Picture)
        await wait_until(pilot, lambda: picture.shown_path == str(screen.current.path), what="picture")
        # Walk down: the picture follows the highlighted row.
        await pilot.press("down")
        second = screen.current
        assert second is screen.shown[1]
        await wait_until(pilot, lambda: picture.shown_path == str(second.path), what="second picture")

        # Edit the caption in place.
        caption_file = second.caption_file
        before = caption_file.read_text()
        editor = screen.query_one("#browser-edit", TextArea)
        assert editor.text == before.strip()
        editor.load_text("purple hexagon,   night sky")
        editor.focus()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: caption_file.read_text() == "purple hexagon, night sky\n")
        assert not [p for p in caption_file.parent.iterdir() if p.name.startswith(".") or "tmp" in p.name]
        assert second.caption == "shapes, purple hexagon, night sky"
        assert "purple hexagon" in str(screen.query_one("#browser-caption").render())
        assert dict(screen.view.tag_frequency())["night sky"] == 1

        # Filter by that tag, then by text; the tag table lists it.
        screen.set_filter("tag:night sky")
        assert [e.path for e in screen.shown] == [second.path]
        screen.set_filter("")
        assert table.row_count == 12

        # Exclude: moved with its caption into excluded/, never deleted; the scan no longer counts it.
        table.focus()
        table.move_cursor(row=1)
        await pilot.pause()
        assert screen.current is second
        await pilot.press("f8")
        await wait_until(pilot, lambda: table.row_count == 11, what="row removed")
        root = second.root
        moved = root / "excluded" / second.path.relative_to(root)
        assert moved.is_file() and not second.path.exists()
        assert (moved.parent / caption_file.name).read_text() == "purple hexagon, night sky\n"
        assert scan_dataset(cfg, hash_files=False, strict=False).total_images == 11
        assert screen.current is screen.shown[1]


async def test_tag_table_selects_the_images_of_a_tag(demo_dataset, tmp_path):
    app = _BrowserApp(_cfg(demo_dataset, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen) and app.screen.view is not None)
        screen = app.screen
        await pilot.press("t")
        tags = screen.query_one("#browser-tags", DataTable)
        assert screen.focused is tags
        tag, count = screen.view.tag_frequency()[1]
        tags.move_cursor(row=1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.filter_text == f"tag:{tag}")
        assert len(screen.shown) == count and all(tag in e.tags for e in screen.shown)


@pytest.mark.slow
def test_an_edited_caption_is_the_only_text_encoded_again(tiny_sd15, demo_dataset, tmp_path):
    text = config_text(tiny_sd15, demo_dataset, name="c", train={"steps": 1}, save={"overwrite": True})
    rc, events, _ = run_in_process(tmp_path, text)
    assert rc == 0
    first = [e for e in of_type(events, "phase") if e["name"] == "cache_text" and "encoded" in e][-1]
    assert first["encoded"] >= 6 and first["reused"] == 0
    write_caption(next((demo_dataset / "extra").glob("*.png")), "grey blob, fog", [".txt", ".caption"])
    rc, events, _ = run_in_process(tmp_path, text)
    assert rc == 0
    second = [e for e in of_type(events, "phase") if e["name"] == "cache_text" and "encoded" in e][-1]
    assert (second["encoded"], second["reused"]) == (1, first["encoded"] - 1)


def test_a_caption_in_a_refused_encoding_is_a_problem_not_a_crash(demo_dataset, tmp_path):
    caption = sorted((demo_dataset / "extra").glob("*.txt"))[0]
    caption.write_bytes("café, shapes".encode("cp1252"))
    view = browse_dataset(_cfg(demo_dataset, tmp_path))
    entry = next((e for e in view.entries if e.path.stem == caption.stem), None)
    if entry is None:  # the scan refuses the image (as training would): listed with its reason
        assert [r for r, _ in view.unreadable] == [f"demo-data/extra/{caption.name}"]
        assert "caption" in view.unreadable[0][1]
        assert len(view.entries) == 11
    else:
        assert entry.error and any(p.startswith("unreadable caption") for p in entry.problems)
