"""The TUI as a user over SSH sees it: 80x24, keyboard only. Regression tests from driving the real
app in tmux: user strings shown literally, dialogs readable, one coherent set of keys per view."""

from __future__ import annotations

from textual.widgets._toast import Toast

from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.runstate import RunState


async def test_notifications_show_run_names_and_paths_literally(tmp_path):
    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        lora = "/ws/runs/x[bold]y/x[bold]y.safetensors"
        app.session.runs["r1"] = RunState(run="r1", name="x[bold]y", status="running")
        app._act(app.session.apply({"type": "run_finished", "run": "r1", "status": "done", "lora": lora}))
        app.main_screen.notify("Loaded preset [red]p[/red]")  # a screen's notify passes markup=True
        await wait_until(pilot, lambda: len(app.screen.query(Toast)) == 2, what="toasts")
        shown = [str(toast.render()) for toast in app.screen.query(Toast)]
        assert any(f"Run x[bold]y done: {lora}" in text for text in shown), shown
        assert any("Loaded preset [red]p[/red]" in text for text in shown), shown


async def test_quit_dialog_text_wraps_inside_the_dialog_at_80_columns():
    from textual.app import App
    from textual.widgets import Label

    from tui.screens.dialogs import QuitModal

    app = App()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(QuitModal("a-long-run-name-v2"))
        await pilot.pause()
        dialog = app.screen.query_one(".dialog")
        body = app.screen.query_one(".body", Label)
        # Before: the label was as wide as its longest line and cut at the dialog's edge.
        assert body.region.right <= dialog.content_region.right
        assert body.size.height >= 3  # wrapped: nothing of the two sentences is lost
        assert "checkpoint is saved" in str(body.render())


def footer_keys(screen) -> list[tuple[str, str]]:
    """(action, description) of each key the footer shows, in order, and that they fit 80 columns."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    footer = screen.query_one(Footer)
    keys = [key for key in footer.query(FooterKey) if not key.has_class("-command-palette")]
    palette = len(" ^p palette ")
    for key in keys:
        assert key.region.right <= footer.region.right - palette, f"{key.description!r} is cut off"
    return [(key.action, key.description) for key in keys]


async def test_run_view_footer_has_one_stop_and_keys_for_the_selected_queue_row(tmp_path):
    from tui.screens.run import RunScreen
    from tui.widgets.queue_panel import QueueTable

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.session.queue_entries = [
            {"run": "a", "name": "a", "status": "done", "position": 1, "run_dir": str(ws / "runs" / "a")},
            {"run": "b", "name": "b", "status": "running", "position": 2},
            {"run": "c", "name": "c", "status": "pending", "position": 3},
        ]
        app.show_run()
        await wait_until(
            pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query(QueueTable), what="run view"
        )
        table = app.screen.query_one(QueueTable)
        table.focus()
        table.move_cursor(row=0)  # the done entry
        await pilot.pause(0.3)
        await wait_until(pilot, lambda: footer_keys(app.screen), what="footer")
        descriptions = [d for _, d in footer_keys(app.screen)]
        assert descriptions.count("Quit") == 1  # q and ^q: one entry
        assert "Stop (save)" not in descriptions  # the run view's x Stop is the one stop key
        assert {"Remove", "Open chart", "Loss/LR", "Form", "History"} <= set(descriptions)
        assert "Resume" not in descriptions and "Stop" not in descriptions  # nothing to resume or stop
        table.move_cursor(row=1)  # the running entry: no remove, no open (it is on screen already)
        await pilot.pause(0.3)
        descriptions = [d for _, d in footer_keys(app.screen)]
        assert "Remove" not in descriptions and "Open chart" not in descriptions
        table.move_cursor(row=2)  # pending: can be moved and removed
        await pilot.pause(0.3)
        descriptions = [d for _, d in footer_keys(app.screen)]
        assert "Remove" in descriptions and "Move" in [label for label in _group_labels(app.screen)]
        await pilot.press("K")  # a move is still refused for a running row, allowed here
        await pilot.pause()
        assert [e["run"] for e in app.screen.query_one("QueuePanel").entries] == ["a", "c", "b"]


def _group_labels(screen) -> list[str]:
    from textual.widgets import Footer
    from textual.widgets._footer import FooterLabel

    return [str(label.render()).strip() for label in screen.query_one(Footer).query(FooterLabel)]


async def test_run_view_fits_24_rows_with_a_long_queue(tmp_path):
    from textual.widgets import Static

    from tui.screens.run import RunScreen
    from tui.widgets.log_tail import LogTail

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        state = RunState(name="demo", status="running", phase="train", step=30, total_steps=60)
        state.loss, state.loss_ema, state.lr, state.seconds_per_step = 0.91, 0.95, 1.6e-4, 0.1
        state.samples_per_second, state.eta_seconds, state.started_at = 20.9, 3.0, 1.0
        app.session._show(state)
        app.run_screen.state = state
        app.session.queue_entries = [
            {"run": f"r{i}", "name": f"run-{i}", "status": "pending", "position": i} for i in range(1, 9)
        ]
        app.show_run()
        await wait_until(
            pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query(LogTail), what="run view"
        )
        screen = app.screen
        phase = screen.query_one("#phase", Static)
        figures = screen.query_one("#figures", Static)
        # Wait for the tick that fills the figures line and the layout after it (it fails if the
        # line wraps to two rows, since then the height never becomes 1).
        await wait_until(
            pilot,
            lambda: "step 30/60" in str(figures.render()) and figures.size.height == 1,
            what="figures line laid out on one row",
        )
        assert screen.scroll_offset.y == 0 and phase.region.y == 0  # the phase line stays on screen
        assert screen.query_one(LogTail).region.bottom <= 23  # above the footer, not pushed out
        text = str(figures.render())
        assert figures.size.height == 1  # one row at 80 columns, not wrapped
        assert all(part in text for part in ("loss 0.9100 ema 0.9500", "lr 1.60e-04", "s/step")), text
        assert str(figures.render()).startswith("step 30/60  ETA")  # what matters most comes first


async def test_run_view_without_a_run_says_so(tmp_path):
    from textual.widgets import Static

    from tui.screens.run import RunScreen

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f7")
        await wait_until(
            pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query("#phase"), what="run view"
        )
        await wait_until(
            pilot, lambda: "No run yet" in str(app.screen.query_one("#phase", Static).render()), what="phase"
        )
        phase = str(app.screen.query_one("#phase", Static).render())
        figures = str(app.screen.query_one("#figures", Static).render())
        assert phase.startswith("No run yet") and "F5" in phase
        assert "starting" not in phase and "ETA" not in figures  # no phantom run


async def test_form_footer_fits_80_columns_and_the_status_names_f7(tmp_path):
    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, preset="mine", attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset")
        await wait_until(pilot, lambda: footer_keys(app.screen), what="footer")
        descriptions = [d for _, d in footer_keys(app.screen)]  # asserts none is cut off
        assert descriptions == ["Run", "Check", "Save", "More", "Runs", "Quit", "History"]
        app.session._show(RunState(run="r", name="old", status="done", step=60, total_steps=60))
        await pilot.pause(0.7)
        status = str(app.main_screen.query_one("#run-status").render())
        assert "old: done" in status
        await pilot.press("f7")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunScreen", what="run view")


async def test_queue_progress_column_widens_as_the_run_goes():
    from textual.app import App, ComposeResult

    from tui.widgets.queue_panel import QueuePanel, QueueTable

    class Host(App):
        def compose(self) -> ComposeResult:
            yield QueuePanel(id="queue")

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(QueuePanel)
        entry = {"run": "a", "name": "a", "status": "running", "position": 1, "progress": 0.0}
        panel.handle_event({"type": "queue", "entries": [{**entry, "step": 0, "total_steps": 60}]})
        await pilot.pause()
        panel.handle_event({"type": "step", "run": "a", "step": 60, "total_steps": 60, "eta_seconds": 0})
        await pilot.pause()
        table = app.query_one(QueueTable)
        assert table.columns["progress"].get_render_width(table) >= len("100% 60/60") + 2  # shown whole
        assert "Queue: 1 entry (1 running)" in str(app.query_one("#queue-title").render())


async def test_history_footer_shows_back_first_and_fits_80_columns(tmp_path):
    from tui.screens.history import HistoryScreen

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), what="history")
        await wait_until(pilot, lambda: footer_keys(app.screen), what="footer")
        shown = footer_keys(app.screen)  # asserts none is cut off
        assert shown[0] == ("back", "Back")
        descriptions = [d for _, d in shown]
        assert {"Filter", "Smooth", "Diff", "Quit"} <= set(descriptions)
        assert "History" not in descriptions  # F10 on the history screen itself does nothing new
        assert "Export" in _group_labels(app.screen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen), what="back")


async def test_queue_cursor_starts_on_the_running_entry():
    from textual.app import App, ComposeResult

    from tui.widgets.queue_panel import QueuePanel

    class Host(App):
        def compose(self) -> ComposeResult:
            yield QueuePanel(id="queue")

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(QueuePanel)
        entries = [
            {"run": "a", "name": "a", "status": "done", "position": 1},
            {"run": "b", "name": "b", "status": "running", "position": 2},
            {"run": "c", "name": "c", "status": "pending", "position": 3},
        ]
        panel.handle_event({"type": "queue", "entries": entries})
        await pilot.pause()
        assert panel.selected_run() == "b"
        panel.table.move_cursor(row=2)  # the user's choice is kept across later snapshots
        panel.handle_event({"type": "queue", "entries": [*entries[:2], {**entries[2], "position": 4}]})
        await pilot.pause()
        assert panel.selected_run() == "c"


async def test_letters_typed_off_a_field_do_not_start_a_run_or_a_check(tmp_path):
    from textual.widgets import Select

    from tui.screens.main import MainScreen

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, preset="mine", attach=False)
    started = []
    app.start_run = started.append
    app.check_config = started.append
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset")
        app.main_screen.query_one("#preset", Select).focus()  # not a text field
        await pilot.press("r", "c")
        await pilot.pause(0.2)
        assert started == [] and isinstance(app.screen, MainScreen)
        await pilot.press("ctrl+r")  # the alternates of F5/F6 still work
        await wait_until(pilot, lambda: len(started) == 1, what="run via ctrl+r")


async def test_caption_stop_key_is_dimmed_while_no_tagger_runs(tmp_path):
    from textual.app import App

    from tui.screens.caption import CaptionScreen

    app = App()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = CaptionScreen(tmp_path, tmp_path / "no-tagger")
        app.push_screen(screen)
        await pilot.pause()
        assert screen.active_bindings["f4"].enabled is False
        assert screen.active_bindings["f5"].enabled is True
        screen.busy = True
        screen.refresh_bindings()
        assert screen.active_bindings["f4"].enabled is True


async def test_run_view_footer_keeps_every_key_at_80_columns_with_a_queued_row_focused(tmp_path):
    # Seen by hand: a stoppable run plus a focused pending row (Move, Remove) made the padded footer
    # 92 columns wide, and "f10 History" and the palette key fell off the right edge at 80.
    from textual.widgets import DataTable

    from tui.screens.run import RunScreen
    from tui.widgets.footer import Footer
    from tui.widgets.queue_panel import QueuePanel, QueueTable

    ws = make_workspace(tmp_path)
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        state = RunState(run="r0", name="demo", status="running", phase="train", step=30, total_steps=60)
        app.session._show(state)
        app.session.can_control = lambda: True  # as when the daemon trains the shown run
        app.run_screen.state = state
        entries = [{"run": "r0", "name": "demo", "status": "running", "position": 0}]
        entries += [{"run": "r1", "name": "next", "status": "pending", "position": 1}]
        app.session.queue_entries = entries
        app.show_run()
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, RunScreen) and app.screen.query(QueueTable),
            what="run view with its queue table",
        )
        panel = app.screen.query_one(QueuePanel)
        panel.show_queue(entries)
        table = panel.query_one(DataTable)
        table.focus()
        await wait_until(pilot, lambda: table.row_count == 2, what="queue rows")
        table.move_cursor(row=1)
        app.screen.refresh_bindings()

        def labels() -> list[str]:
            return _group_labels(app.screen) + [
                str(key.render()) for key in app.screen.query_one(Footer).query("FooterKey")
            ]

        footer = app.screen.query_one(Footer)
        await wait_until(
            pilot,
            lambda: (
                any("Remove" in label for label in labels()) and all(c.size.width for c in footer.children)
            ),
            what="queue keys laid out in the footer",
        )
        shown = " ".join(labels())
        for key in ("Remove", "Stop", "Save now", "Form", "Quit", "History"):
            assert key in shown, shown
        assert sum(child.size.width for child in footer.children) <= 80, shown
        await pilot.resize_terminal(120, 30)
        await wait_until(pilot, lambda: not footer.compact, what="padded footer on a wide terminal")
