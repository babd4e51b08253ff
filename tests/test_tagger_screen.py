"""CaptionScreen with a pilot: preview then caption through the real `python -m engine caption`."""

from __future__ import annotations

import pytest
from tagger_util import BLUE, GREEN, RED, make_images, make_tagger, read
from textual.app import App
from textual.widgets import Input, ProgressBar, Static

from tests.tui_support import wait_until
from tui.screens.caption import CaptionScreen


class CaptionApp(App):
    def __init__(self, screen: CaptionScreen) -> None:
        super().__init__()
        self.caption_screen = screen
        self.captioned: list[CaptionScreen.Captioned] = []

    def on_mount(self) -> None:
        self.push_screen(self.caption_screen)

    def on_caption_screen_captioned(self, message: CaptionScreen.Captioned) -> None:
        self.captioned.append(message)


def text_of(screen, selector) -> str:
    return str(screen.query_one(selector, Static).render())


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return make_tagger(tmp_path_factory.mktemp("tagger") / "wd14")


async def test_preview_then_caption(tmp_path, tagger):
    data = make_images(tmp_path / "data")
    (data / "red.txt").write_text("mine\n", encoding="utf-8")
    screen = CaptionScreen(data, tagger, undesired_tags=["looking at viewer"])
    app = CaptionApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("f2")
        await wait_until(pilot, lambda: screen.preview_items and not screen.busy)
        assert len(screen.preview_items) == 5
        by_name = {i["image"].rsplit("/", 1)[-1]: i for i in screen.preview_items}
        assert by_name["blue.png"]["caption"] == BLUE.replace(", looking at viewer", "")
        assert by_name["red.png"]["existing"] == "mine"
        shown = text_of(screen, "#caption-preview")
        assert "green.png" in shown and GREEN.replace(", looking at viewer", "") in shown
        assert "Preview of 5 images" in text_of(screen, "#caption-status")
        assert not (data / "blue.txt").exists()  # a preview writes nothing

        screen.query_one("#caption-trigger", Input).value = "mychar"
        await pilot.press("f5")
        await wait_until(pilot, lambda: screen.summary is not None and not screen.busy)
        assert screen.summary["written"] == 4 and screen.summary["skipped"] == 1
        bar = screen.query_one(ProgressBar)
        assert bar.total == 4 and bar.progress == 4
        assert "Wrote 4 caption files" in text_of(screen, "#caption-status")
        assert read(data / "blue.txt") == "mychar, " + BLUE.replace(", looking at viewer", "") + "\n"
        assert read(data / "red.txt") == "mine\n"
        assert [m.summary["written"] for m in app.captioned] == [4]

        # Overwrite replaces the hand-written caption.
        await pilot.click("#caption-overwrite")
        await pilot.press("f5")
        await wait_until(pilot, lambda: len(app.captioned) == 2 and not screen.busy)
        assert read(data / "red.txt") == "mychar, " + RED.replace(", looking at viewer", "") + "\n"


async def test_errors_are_shown(tmp_path):
    data = make_images(tmp_path / "data")
    screen = CaptionScreen(data, tmp_path / "no-tagger")
    app = CaptionApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen.query_one("#caption-general", Input).value = "2"
        await pilot.press("f5")
        await pilot.pause()
        assert not screen.busy and "general threshold" in text_of(screen, "#caption-status")

        screen.query_one("#caption-general", Input).value = "0.35"
        await pilot.press("f5")
        await wait_until(pilot, lambda: screen.error is not None and not screen.busy)
        assert "Failed: the tagger folder does not exist" in text_of(screen, "#caption-status")
        body = text_of(screen, "#caption-preview")
        assert "SmilingWolf/wd-swinv2-tagger-v3" in body and str(tmp_path / "no-tagger") in body
        assert app.captioned == [] and not list(data.rglob("*.txt"))


async def test_app_palette_opens_the_caption_screen(tmp_path):
    from tui.app import LoratuiApp

    app = LoratuiApp(tmp_path, attach=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Caption images (WD14 / Florence-2)" in titles
        form_dirs = app.main_screen.form.values()["dataset.dirs"]
        app.show_caption()
        await wait_until(pilot, lambda: isinstance(app.screen, CaptionScreen))
        await pilot.pause()
        assert app.screen.query_one("#caption-dir", Input).value == (form_dirs[0] if form_dirs else "")
        assert app.screen.query_one("#caption-general", Input).value == "0.35"
        assert app.screen.cwd == tmp_path.resolve()
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CaptionScreen))
