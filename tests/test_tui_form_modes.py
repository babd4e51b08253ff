"""The run form follows the training mode: each mode shows its own fields, hides the ones it never
reads, and keeps every value (hidden or not) for validation and saving."""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Input, Select

from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.widgets.form import ConfigForm, FieldRow


def _app(ws, preset: str = "mine") -> LoratuiApp:
    return LoratuiApp(ws, attach=False, preset=preset)


def shown(widget: Widget) -> bool:
    """Displayed, and so is every container above it (a hidden section hides its rows)."""
    return all(node.display for node in widget.ancestors_with_self if isinstance(node, Widget))


def row(screen, dotted: str) -> FieldRow:
    section, _, key = dotted.rpartition(".")
    return screen.query_one(f"#row-f-{section or 'top'}--{key}", FieldRow)


ILECO = ("ileco.original_prompt", "ileco.target_prompt")
DIFFERENCE = ("difference.original_image", "difference.target_image", "difference.first_pass")
LORA_ONLY = ("dataset.dirs", "dataset.caption", "dataset.trigger_word")
DIFFERENCE_OPTIONS = (
    "difference.save_first_pass",
    "difference.first_pass_only",
    "difference.load_first_pass",
)


async def test_the_mode_select_shows_the_fields_of_its_mode(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.main_screen
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        await pilot.pause()
        mode = screen.query_one("#f-top--mode", Select)
        assert shown(mode) and mode.value == "lora"  # in the basic form, next to the name
        assert all(shown(row(screen, d)) for d in LORA_ONLY)
        assert not any(shown(row(screen, d)) for d in ILECO + DIFFERENCE)

        mode.value = "ileco"
        await pilot.pause()
        assert all(shown(row(screen, d)) for d in ILECO)
        assert not any(shown(row(screen, d)) for d in LORA_ONLY + DIFFERENCE)
        assert shown(row(screen, "dataset.resolution"))  # ileco trains at this size
        assert shown(screen.query_one("#note-dataset-ileco"))
        assert screen.dirty  # a mode change is an edit like any other

        mode.value = "difference"
        await pilot.pause()
        assert all(shown(row(screen, d)) for d in DIFFERENCE)
        assert not any(shown(row(screen, d)) for d in LORA_ONLY + ILECO)
        assert not shown(screen.query_one("#note-dataset-ileco"))

        mode.value = "lora"
        await pilot.pause()
        assert all(shown(row(screen, d)) for d in LORA_ONLY)
        assert not any(shown(row(screen, d)) for d in ILECO + DIFFERENCE)
        assert not shown(screen.query_one("#note-dataset-ileco"))


async def test_the_advanced_view_hides_what_the_mode_does_not_read(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen, form = app.main_screen, app.main_screen.form
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        await pilot.press("f4")
        await wait_until(pilot, lambda: screen.query("#row-f-dataset--flip"), what="advanced rows")
        await pilot.pause()
        # lora: the iLECO and difference sections say nothing, so they are not there.
        assert not shown(screen.query_one("#sec-ileco")) and not shown(screen.query_one("#sec-difference"))
        assert shown(screen.query_one("#sec-caption_auto")) and shown(row(screen, "dataset.flip"))
        screen.query_one("#f-top--mode", Select).value = "difference"
        await pilot.pause()
        assert shown(screen.query_one("#sec-difference")) and not shown(screen.query_one("#sec-ileco"))
        # TrainTrain's pass options are advanced fields of the difference section
        assert all(shown(row(screen, d)) for d in DIFFERENCE_OPTIONS)
        assert not shown(screen.query_one("#sec-caption_auto"))  # WD14 captions a dataset: none here
        assert not shown(row(screen, "dataset.flip")) and not shown(row(screen, "train.epochs"))
        assert shown(row(screen, "dataset.resize")) and shown(row(screen, "dataset.max_bucket"))
        assert form.advanced


async def test_an_ileco_preset_shows_its_prompts_right_after_loading(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws, preset="sd15-ileco")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.main_screen
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        await pilot.pause(0.2)
        prompt = screen.query_one("#f-ileco--original_prompt", Input)
        assert prompt.value == "mona lisa" and shown(prompt)
        assert screen.query_one("#f-top--mode", Select).value == "ileco"
        assert not shown(row(screen, "dataset.dirs"))
        assert screen.form.values()["ileco.original_prompt"] == "mona lisa"
        assert not screen.dirty


async def test_a_preset_arriving_while_the_form_mounts_sets_the_mode(tmp_path):
    """The mode follows the loaded values at once, even before the select has its value."""
    from textual.app import App

    values = {"name": "early", "mode": "ileco", "ileco.original_prompt": "mona lisa"}

    class FormApp(App):
        def compose(self):
            yield ConfigForm(workspace=tmp_path, id="form")

        def on_mount(self) -> None:
            self.query_one(ConfigForm).load(values)  # rows are composed, not mounted yet

    app = FormApp()
    async with app.run_test(size=(100, 40)) as pilot:
        form = app.query_one(ConfigForm)
        await wait_until(
            pilot, lambda: app.query_one("#f-ileco--original_prompt", Input).value == "mona lisa"
        )
        await pilot.pause(0.2)
        assert form.has_class("-mode-ileco") and app.query_one("#f-top--mode", Select).value == "ileco"
        assert shown(app.query_one("#f-ileco--original_prompt")) and not shown(row(app, "dataset.dirs"))


async def test_a_value_typed_in_a_hidden_mode_is_kept_and_saved(tmp_path):
    import tomllib

    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.main_screen
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        mode = screen.query_one("#f-top--mode", Select)
        mode.value = "ileco"
        await pilot.pause()
        prompt = screen.query_one("#f-ileco--original_prompt", Input)
        prompt.focus()
        await pilot.press(*"a red barn")
        await pilot.pause()
        assert "ileco:" in str(screen.query_one("#help").render())  # its help line
        mode.value = "lora"
        await pilot.pause()
        assert not shown(prompt)
        values = screen.form.values()
        assert values["ileco.original_prompt"] == "a red barn" and values["mode"] == "lora"
        assert values["dataset.dirs"] == ["data"]  # hidden in ileco, never lost
        mode.value = "ileco"
        await pilot.pause()
        assert shown(prompt) and prompt.value == "a red barn"
        assert screen.form.validate_all() == {}
        await pilot.press("f2")
        await pilot.pause()
        saved = tomllib.loads((ws / "presets" / "mine.toml").read_text())
        assert saved["mode"] == "ileco" and saved["ileco"]["original_prompt"] == "a red barn"
        assert saved["dataset"]["dirs"] == ["data"]


async def test_paths_a_mode_never_reads_need_not_exist(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen, form = app.main_screen, app.main_screen.form
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        screen.query_one("#f-dataset--dirs", Input).value = "gone"
        await pilot.pause()
        assert "not found" in form.errors["dataset.dirs"]
        screen.query_one("#f-top--mode", Select).value = "ileco"
        await pilot.pause()
        # ileco reads no dataset: the error goes, and the row with it.
        assert "dataset.dirs" not in form.errors and not shown(row(screen, "dataset.dirs"))
        screen.query_one("#f-ileco--original_prompt", Input).value = "mona lisa"
        await pilot.pause()
        assert form.validate_all() == {}
        screen.query_one("#f-top--mode", Select).value = "difference"
        await pilot.pause()
        screen.query_one("#f-difference--original_image", Input).value = "missing.png"
        await pilot.pause()
        assert "not found" in form.errors["difference.original_image"]


async def test_an_invalid_field_stays_in_sight_when_its_mode_is_left(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen, form = app.main_screen, app.main_screen.form
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        mode = screen.query_one("#f-top--mode", Select)
        mode.value = "difference"
        await pilot.pause()
        screen.query_one("#f-difference--first_pass", Input).value = "{ steps = "
        await pilot.pause()
        mode.value = "lora"
        await pilot.pause()
        assert "difference.first_pass" in form.errors
        assert shown(row(screen, "difference.first_pass"))  # or it could not be fixed
        assert not shown(row(screen, "difference.original_image"))
        screen.query_one("#f-difference--first_pass", Input).value = "{ steps = 5 }"
        await pilot.pause()
        assert not shown(row(screen, "difference.first_pass"))


async def test_the_basic_form_keeps_its_top_in_sight_at_80x24(tmp_path):
    ws = make_workspace(tmp_path)
    app = _app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.main_screen
        await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
        await pilot.pause(0.2)
        form = screen.form
        assert form.size.height >= 10
        preset, mode = screen.query_one("#preset", Select), screen.query_one("#f-top--mode", Select)
        name = screen.query_one("#f-top--name", Input)
        for widget in (preset, name, mode):
            assert widget.region.height and widget.region.bottom <= form.region.bottom, widget
        mode.value = "ileco"
        await pilot.pause()
        # The prompts come right under the mode select, not below the fold.
        prompt = screen.query_one("#f-ileco--original_prompt", Input)
        assert prompt.region.height and prompt.region.bottom <= form.region.bottom
