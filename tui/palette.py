"""The app's entries in the command palette (ctrl+p): every action a key does, found by name.

`loratui_commands(app)` yields them for LoratuiApp.get_system_commands (tui/app.py), after
Textual's own (theme, keys, quit). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import SystemCommand

from engine.config import list_presets

if TYPE_CHECKING:
    from tui.app import LoratuiApp


def loratui_commands(app: LoratuiApp) -> Iterable[SystemCommand]:
    """The palette's loratui entries: form, run, queue, captions, history, presets."""
    main = app.main_screen
    yield SystemCommand("Run", "Validate the form and start the run (F5)", main.action_run)
    yield SystemCommand("Check dataset", "Check the config and dataset (F6)", main.action_check)
    yield SystemCommand("Save preset", "Save over the loaded preset, comments kept (F2)", main.action_save)
    yield SystemCommand(
        "Browse dataset", "Images, buckets, crops, captions; edit and exclude", app.browse_dataset
    )
    yield SystemCommand("Save preset as", "Save the form as a new preset (F3)", main.action_save_as)
    yield SystemCommand(
        "Toggle advanced fields", "Show or hide advanced fields (F4)", main.action_toggle_advanced
    )
    yield SystemCommand("Show run", "The live run view (F7)", app.show_run)
    yield SystemCommand(
        "Show next running run",
        "With several runs training at once: follow the next one (> in the run view)",
        lambda: app.show_running(step=1) and app.show_run(),
    )
    yield SystemCommand("Show form", "The run form", app.show_form)
    yield SystemCommand(
        "Caption images (WD14 / Florence-2)",
        "Caption a dataset folder with WD14 tags and/or Florence-2 sentences",
        app.show_caption,
    )
    yield SystemCommand(
        "Test ComfyUI connection",
        "Server reachable, [collect] node ids and their classes, the server's object info",
        main.action_test_connection,
    )
    yield SystemCommand(
        "Run history", "Past runs: overlay loss curves, smoothing, config diff (F10)", app.action_history
    )
    yield SystemCommand("Stop run", "Stop the run, saving a checkpoint first (x)", app.stop_run)
    yield SystemCommand(
        "Stop run without saving",
        "Stop the shown run at once, no checkpoint (S in the queue)",
        app.kill_run,
    )
    yield SystemCommand(
        "Pause queue", "Finish the running run but start no new one", lambda: app.queue_command("pause_queue")
    )
    yield SystemCommand("Resume queue", "Start queued runs again", lambda: app.queue_command("resume_queue"))
    yield SystemCommand(
        "Resume stopped run",
        "Continue the shown run from its last saved state (r in the queue)",
        app.resume_run,
    )
    yield SystemCommand("Save checkpoint now", "Write a checkpoint at the next step (n)", app.save_now)
    yield SystemCommand("Sample now", "Generate samples at the next step (p)", app.sample_now)
    yield SystemCommand(
        "Toggle loss / learning rate chart",
        "(l in the run view)",
        lambda: app.run_screen.action_toggle_lr(),
    )
    for name, path in list_presets(app.workspace).items():
        yield SystemCommand(
            f"Load preset {name}", str(path), lambda p=path: app.main_screen.load_preset(Path(p))
        )
