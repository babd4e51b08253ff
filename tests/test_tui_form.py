"""The run form: built from the schema, loads presets, validates inline, saves with comments kept."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Switch

from engine.config import SCHEMA
from tests.daemon_support import stop_daemon
from tests.tui_support import FAKE_ENGINE, make_workspace, wait_until
from tui.app import LoratuiApp
from tui.widgets.form import ConfigForm, FieldRow


def _app(ws, **kw):
    return LoratuiApp(ws, attach=False, preset="mine", **kw)


async def test_preset_loads_into_form_and_form_follows_schema(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        form = app.main_screen.form
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset loaded")
        assert app.main_screen.query_one("#f-train--lr", Input).value == "0.002"
        assert app.main_screen.query_one("#f-network--rank", Input).value == "4"
        assert app.main_screen.query_one("#f-dataset--dirs", Input).value == "data"
        assert app.main_screen.query_one("#f-train--optimizer", Select).value == "adamw"
        values = form.values()
        assert values["train.steps"] == 30 and values["dataset.resolution"] == 64
        # Every schema key is in the form; only the basic ones are built at first.
        assert set(values) == {s.dotted for s in SCHEMA}
        shown = {row.spec.dotted for row in form.query(FieldRow)}
        assert shown == {s.dotted for s in SCHEMA if s.basic}
        await pilot.press("f4")  # advanced
        await wait_until(pilot, lambda: len(form.query(FieldRow)) == len(SCHEMA), what="advanced rows")
        assert isinstance(app.main_screen.query_one("#f-train--gradient_checkpointing"), Switch)
        assert app.main_screen.query_one("#f-train--scheduler", Select).value == "cosine"
        # The values of the advanced rows came through the lazy build unchanged.
        assert form.values() == values


@pytest.fixture
def daemon_ws(tmp_path, monkeypatch):
    """A workspace whose daemon (started by the first F5) runs the fake trainer."""
    import sys

    monkeypatch.setenv("LORATUI_TRAIN_CMD", f"{sys.executable} {FAKE_ENGINE} --steps 5")
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINE.parent.parent))
    ws = make_workspace(tmp_path)
    yield ws
    stop_daemon(ws)


async def test_invalid_value_shows_error_and_blocks_run(daemon_ws):
    ws = daemon_ws
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        lr = app.main_screen.query_one("#f-train--lr", Input)
        lr.value = "fast"
        await pilot.pause()
        row = app.main_screen.query_one("#row-f-train--lr", FieldRow)
        assert row.has_class("-invalid")
        assert "expected a number" in str(row.query_one(".field-error").render())
        rank = app.main_screen.query_one("#f-network--rank", Input)
        rank.value = "0"
        await pilot.pause()
        assert "at least 1" in str(
            app.main_screen.query_one("#row-f-network--rank").query_one(".field-error").render()
        )
        base = app.main_screen.query_one("#f-model--base", Input)
        base.value = "models/missing"
        await pilot.pause()
        assert "not found" in str(
            app.main_screen.query_one("#row-f-model--base").query_one(".field-error").render()
        )
        await pilot.press("f5")
        await pilot.pause()
        assert not app.session.connected and not app.session.client.connecting, (
            "an invalid form must not start a run"
        )
        assert not (ws / "queue").exists()
        # Fixing the values clears the errors and lets the run start.
        lr.value = "1e-4"
        rank.value = "8"
        base.value = "models/base"
        await pilot.pause()
        assert not row.has_class("-invalid")
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.status == "done", what="run done")
        (entry,) = (ws / "queue").glob("mine-*.toml")
        written = tomllib.loads(entry.read_text())
        assert written["train"]["lr"] == 1e-4 and written["network"]["rank"] == 8


async def test_cross_field_error_from_engine_validation_blocks_run(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        # The run-name rule (the one the engine's config check applies) flags a slash in the field
        # at once, and the run is not started.
        app.main_screen.query_one("#f-top--name", Input).value = "runs/mine"
        await pilot.pause()
        await pilot.press("f5")
        form = app.main_screen.form
        await wait_until(pilot, lambda: "name" in form.errors, what="name error")
        assert "contains /, which a file name cannot hold" in form.errors["name"]
        assert not app.session.connected and not app.session.client.connecting


async def test_save_keeps_comments_and_save_as_makes_a_new_preset(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    preset = ws / "presets" / "mine.toml"
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        app.main_screen.query_one("#f-network--rank", Input).value = "8"
        app.main_screen.query_one("#f-dataset--trigger_word", Input).value = "shapes [v2]"
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        text = preset.read_text()
        assert "# my preset: keep this comment" in text
        assert "rank = 8                  # small rank, on purpose" in text
        assert "lr = 2e-3                 # fast" in text  # untouched line stays byte-identical
        data = tomllib.loads(text)
        assert data["network"]["rank"] == 8 and data["dataset"]["trigger_word"] == "shapes [v2]"
        app.main_screen.query_one("#f-train--steps", Input).value = "99"
        await pilot.pause()
        saved = app.main_screen.save_as("mine-long")
        assert saved == ws / "presets" / "mine-long.toml"
        new_text = saved.read_text()
        assert "# the base model" in new_text and tomllib.loads(new_text)["train"]["steps"] == 99
        assert tomllib.loads(preset.read_text())["train"]["steps"] == 30  # the old one is unchanged
        # An invalid form is never saved.
        app.main_screen.query_one("#f-train--steps", Input).value = "-5"
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        assert tomllib.loads(saved.read_text())["train"]["steps"] == 99


async def test_form_usable_at_80x24_with_basic_fields(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        form = app.main_screen.query_one(ConfigForm)
        assert form.size.height >= 10
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused is not None


async def test_history_screen_one_key_away(tmp_path):
    from textual.widgets import DataTable

    from tests.logs_util import make_run
    from tui.screens.history import HistoryScreen

    ws = make_workspace(tmp_path)
    make_run(ws, "earlier", steps=50)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset loaded")
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), what="history screen")
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, what="the earlier run listed")
        assert "earlier" in str(table.get_row_at(0))


async def test_values_loaded_while_the_rows_mount_are_the_ones_shown(tmp_path):
    """A preset that arrives while the form's inputs are still mounting (a fast demo build in a real
    terminal) must win over the defaults the inputs were composed with: their mount-time Changed
    messages are not edits."""
    from textual.app import App

    values = {"name": "early", "dataset.resolution": 96, "train.steps": 60, "network.rank": 4}

    class FormApp(App):
        def compose(self):
            yield ConfigForm(workspace=tmp_path, id="form")

        def on_mount(self) -> None:
            self.edits = []
            self.query_one(ConfigForm).load(values)  # rows are composed, not mounted yet

        def on_config_form_edited(self, event: ConfigForm.Edited) -> None:
            self.edits.append(event.dotted)

    app = FormApp()
    async with app.run_test(size=(100, 40)) as pilot:
        form = app.query_one(ConfigForm)
        await wait_until(
            pilot, lambda: app.query_one("#f-train--steps", Input).value == "60", what="steps shown"
        )
        await pilot.pause(0.3)
        assert app.query_one("#f-dataset--resolution", Input).value == "96"
        assert app.query_one("#f-network--rank", Input).value == "4"
        assert app.query_one("#f-top--name", Input).value == "early"
        got = form.values()
        assert (got["dataset.resolution"], got["train.steps"], got["network.rank"]) == (96, 60, 4)
        assert app.edits == []  # loading is not editing: the form is not marked modified


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1])
async def test_a_preset_arriving_while_the_screen_mounts_is_shown_whole(tmp_path, delay):
    """`loratui --demo` on a workspace whose demo/ exists: the build worker hands the preset over while
    the form's inputs (and the preset list) are still mounting. The numbers shown, and run, must be
    the preset's, not the defaults the inputs were composed with (a real terminal showed 1024 / 1000
    steps), and the form is not marked modified."""
    import threading
    import time

    import tui.app

    ws = make_workspace(tmp_path)

    class EarlyPresetApp(LoratuiApp):
        CSS_PATH = str(Path(tui.app.__file__).parent / LoratuiApp.CSS_PATH)

        def on_mount(self) -> None:  # runs after LoratuiApp.on_mount (Textual calls both)
            def hand_over() -> None:
                time.sleep(delay)
                self.call_from_thread(self.load_preset_ref, "mine")

            threading.Thread(target=hand_over, daemon=True).start()

    app = EarlyPresetApp(ws, attach=False)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.main_screen
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        await pilot.pause(0.3)
        shown = {k: screen.query_one(f"#f-{k}", Input).value for k in ("dataset--resolution", "train--steps")}
        assert shown == {"dataset--resolution": "64", "train--steps": "30"}
        assert screen.query_one("#f-network--rank", Input).value == "4"
        values = screen.form.values()
        assert (values["dataset.resolution"], values["train.steps"]) == (64, 30)
        assert not screen.dirty
        await wait_until(pilot, lambda: screen.query_one("#preset", Select).value == str(screen.preset_path))
