"""Pilot tests of the queue panel in a tiny host app: add, reorder, remove, stop, resume, open, and
status/progress updates from engine events; names shown literally."""

from __future__ import annotations

from types import SimpleNamespace

from textual.app import App, ComposeResult

from tui.widgets.queue_panel import QueuePanel, QueueTable, queue_command


def entry(run: str, name: str, status: str = "pending", position: int = 1, **extra) -> dict:
    return {
        "run": run,
        "name": name,
        "status": status,
        "position": position,
        "preset": "sdxl",
        "created": "2025-01-01T00:00:00+00:00",
        "progress": 0.0,
        "base": "/models/sd_xl_base_1.0.safetensors",
        "run_dir": f"/ws/runs/{name}",
        **extra,
    }


class Host(App):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[QueuePanel.MoveRequested | object] = []

    def compose(self) -> ComposeResult:
        yield QueuePanel(id="queue")

    def on_queue_panel_move_requested(self, message: QueuePanel.MoveRequested) -> None:
        self.requests.append(("move", message.run, message.position))

    def on_queue_panel_remove_requested(self, message: QueuePanel.RemoveRequested) -> None:
        self.requests.append(("remove", message.run))

    def on_queue_panel_stop_requested(self, message: QueuePanel.StopRequested) -> None:
        self.requests.append(("stop", message.run, message.save))

    def on_queue_panel_resume_requested(self, message: QueuePanel.ResumeRequested) -> None:
        self.requests.append(("resume", message.run))

    def on_queue_panel_run_opened(self, message: QueuePanel.RunOpened) -> None:
        self.requests.append(("open", message.run, message.run_dir, message.status))


def cells(app: Host) -> list[list[str]]:
    table = app.query_one(QueueTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def queue_event(*entries: dict, paused: bool = False) -> dict:
    return {"type": "queue", "entries": list(entries), "paused": paused}


async def test_add_entries_and_names_are_literal():
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(QueuePanel)
        assert cells(app) == []
        panel.handle_event(queue_event(entry("a-1", "lora[v2]"), entry("b-2", "[bold]x[/]", position=2)))
        await pilot.pause()
        rows = cells(app)
        assert [r[1] for r in rows] == ["lora[v2]", "[bold]x[/]"]
        assert rows[0][2] == "sdxl / sd_xl_base_1.0.safetensors"
        assert rows[0][3] == "pending" and rows[0][4] == "0%"
        # a new entry arrives with the next snapshot
        panel.handle_event(
            queue_event(
                entry("a-1", "lora[v2]"),
                entry("b-2", "[bold]x[/]", position=2),
                entry("c-3", "c", position=3),
            )
        )
        await pilot.pause()
        assert [r[0] for r in cells(app)] == ["1", "2", "3"]
        assert "3 entries" in str(app.query_one("#queue-title").render())


async def test_reorder_with_keys_requests_a_move_and_cursor_follows():
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(QueuePanel)
        panel.handle_event(
            queue_event(entry("a", "a"), entry("b", "b", position=2), entry("c", "c", position=3))
        )
        await pilot.pause()
        app.query_one(QueueTable).focus()
        await pilot.press("down", "down")  # cursor on c
        await pilot.press("K")
        await pilot.pause()
        assert app.requests[-1] == ("move", "c", 2)
        assert [r[1] for r in cells(app)] == ["a", "c", "b"]
        assert panel.selected_run() == "c"
        await pilot.press("shift+up")  # an alternate key for the same move
        await pilot.pause()
        assert app.requests[-1] == ("move", "c", 1)
        assert [r[1] for r in cells(app)] == ["c", "a", "b"]
        await pilot.press("J")
        await pilot.pause()
        assert app.requests[-1] == ("move", "c", 2)
        # The engine's snapshot is the truth: shown as it says, cursor still on c.
        panel.handle_event(
            queue_event(entry("b", "b"), entry("c", "c", position=2), entry("a", "a", position=3))
        )
        await pilot.pause()
        assert [r[1] for r in cells(app)] == ["b", "c", "a"]
        assert panel.selected_run() == "c"


async def test_running_entry_cannot_move_or_be_removed_but_can_stop():
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(QueuePanel)
        panel.handle_event(queue_event(entry("a", "a", "running"), entry("b", "b", position=2)))
        await pilot.pause()
        app.query_one(QueueTable).focus()
        await pilot.press("K", "J", "delete")
        await pilot.pause()
        assert app.requests == []  # refused with a notification
        await pilot.press("s")
        await pilot.press("S")
        await pilot.pause()
        assert app.requests == [("stop", "a", True), ("stop", "a", False)]
        await pilot.press("down", "backspace")
        await pilot.pause()
        assert app.requests[-1] != ("remove", "b")  # one press only asks for confirmation
        await pilot.press("backspace")
        await pilot.pause()
        assert app.requests[-1] == ("remove", "b")


async def test_status_and_progress_follow_engine_events():
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(QueuePanel)
        panel.handle_event(queue_event(entry("a", "a", "running"), entry("b", "b", position=2)))
        step = {"type": "step", "run": "a", "step": 30, "total_steps": 60, "eta_seconds": 125.0, "loss": 0.1}
        panel.handle_event(step)
        await pilot.pause()
        assert cells(app)[0][3:] == ["running", "50% 30/60", "2m05s"]
        panel.handle_event({"type": "run_finished", "run": "a", "status": "interrupted", "error": None})
        await pilot.pause()
        assert cells(app)[0][3] == "interrupted"
        assert cells(app)[0][5] == "-"
        panel.handle_event({"type": "log", "message": "ignored"})
        app.query_one(QueueTable).focus()
        await pilot.press("r")
        await pilot.pause()
        assert app.requests[-1] == ("resume", "a")
        await pilot.press("enter")
        await pilot.pause()
        assert app.requests[-1] == ("open", "a", "/ws/runs/a", "interrupted")
        await pilot.press("down", "r")  # b is pending: not resumable
        await pilot.pause()
        assert app.requests[-1] == ("open", "a", "/ws/runs/a", "interrupted")
        panel.handle_event(queue_event(entry("b", "b"), paused=True))
        await pilot.pause()
        assert [r[1] for r in cells(app)] == ["b"]
        assert "paused" in str(app.query_one("#queue-title").render())


def test_requests_map_to_engine_commands():
    assert queue_command(QueuePanel.MoveRequested("a", 3)) == {"cmd": "move", "run": "a", "position": 3}
    assert queue_command(QueuePanel.StopRequested("a", False)) == {"cmd": "stop", "run": "a", "save": False}
    assert queue_command(QueuePanel.RemoveRequested("a")) == {"cmd": "remove", "run": "a"}
    assert queue_command(QueuePanel.ResumeRequested("a")) == {"cmd": "resume", "run": "a"}
    assert queue_command(QueuePanel.RunOpened("a", "a", "/r", "done")) is None


class KeptHost(Host):
    session = SimpleNamespace(queue_entries=[entry("k", "kept", "done")], runs=None)


async def test_panel_mounted_late_shows_the_kept_queue():
    app = KeptHost()
    async with app.run_test() as pilot:
        await pilot.pause()
        assert cells(app) == [["1", "kept", "sdxl / sd_xl_base_1.0.safetensors", "done", "0%", "-"]]


class _State:
    def __init__(self, step: int, total: int, eta: float) -> None:
        self.step, self.total_steps, self.eta_seconds = step, total, eta


async def test_sync_from_app_state():
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(QueuePanel)
        entries = [entry("a", "a", "running"), entry("b", "b", position=2)]
        panel.sync(entries, {"a": _State(5, 20, 61.0)})
        await pilot.pause()
        assert cells(app)[0][3:] == ["running", "25% 5/20", "1m01s"]
        panel.sync(entries, {"a": _State(10, 20, 30.0)})
        await pilot.pause()
        assert cells(app)[0][4:] == ["50% 10/20", "30s"]
        panel.sync([entry("a", "a", "done", progress=1.0, step=20, total_steps=20)], {})
        await pilot.pause()
        assert cells(app) == [["1", "a", "sdxl / sd_xl_base_1.0.safetensors", "done", "100% 20/20", "-"]]
