"""The loratui Textual app: run form, live run view, dataset check; `run(argv)` is the entry point.

The app is always a client of the workspace's queue daemon (`engine serve`, engine/daemon/): F5 adds
the form's config to the queue, the daemon trains it in a worker of its own. An EngineSession
(tui/session.py, not a widget) owns the connection and the run states; the app routes the client's
messages to it and turns its outcomes into screens and notifications. Quitting never stops training
unless asked: the daemon goes on, and the next loratui attaches to it, showing the queue and the
running run rebuilt from its folder. What the keys do to runs is in
tui/run_controls.py, the palette's entries in tui/palette.py, the command line in tui/cli.py.
Nothing here imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine.config import RunConfig, dump_resolved, list_presets
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from tui.client import engine_argv, engine_env
from tui.messages import EngineConnected, EngineDisconnected, EngineEvent, EngineLineSkipped
from tui.palette import loratui_commands
from tui.run_controls import RunControls
from tui.runstate import RunState, format_error
from tui.screens.main import MainScreen
from tui.session import EngineSession, Outcome

# Screens not shown at start (run, check, caption, history, dialogs) are imported when first needed:
# the run view alone pulls in plotext, PIL and the queue table, and every import before the first
# frame is paid on each start over SSH (bench/tui_start.py).

CheckCommand = Callable[[Path], Sequence[str]]


class LoratuiApp(RunControls, App):
    """The terminal UI.

    Args:
        workspace: the folder with presets/, runs/, queue/ (default: the current directory).
        check_command: argv of the dataset check of a config file.
        preset: a preset name or file to load into the form at start.
        demo: build the demo workspace first, then load the demo preset.
        attach: connect to the workspace's daemon at start, starting one when none runs (False: the
            first F5 or queue action connects).
    """

    CSS_PATH = "app.tcss"
    TITLE = "loratui"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
        Binding(
            "f10",
            "history",
            "History",
            tooltip="Past runs: overlay loss curves, compare configs",
            id="history",
        ),
    ]

    def __init__(
        self,
        workspace: str | os.PathLike | None = None,
        *,
        check_command: CheckCommand | None = None,
        preset: str | None = None,
        demo: bool = False,
        attach: bool = True,
    ) -> None:
        super().__init__()
        self.workspace = Path(workspace or Path.cwd()).resolve()
        self.check_command: CheckCommand = check_command or (
            lambda cfg: engine_argv("check", str(cfg), "--json")
        )
        self.initial_preset = preset
        self.demo = demo
        self.attach = attach
        self.session = EngineSession(self.workspace, self)
        self.skipped_lines = 0
        self._controls: tuple = ()
        self.main_screen = MainScreen(self.workspace)
        self._run_screen = None
        self.animation_level = "none"  # every repaint crosses the SSH link

    @property
    def run_screen(self):
        """The run view (a RunScreen), built and installed as "run" when first asked for."""
        if self._run_screen is None:
            from tui.screens.run import RunScreen

            self._run_screen = RunScreen(self.session)
            self.install_screen(self._run_screen, "run")
        return self._run_screen

    def _showing(self, module: str, name: str) -> bool:
        """Whether the top screen is `module`.`name`, without importing the module to ask."""
        cls = getattr(sys.modules.get(module), name, None)
        return cls is not None and isinstance(self.screen, cls)

    @property
    def run_state(self) -> RunState:
        """The run the run view shows."""
        return self.session.current

    # --- start-up --------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.install_screen(self.main_screen, "main")
        self.push_screen("main")
        self.set_interval(0.5, self._update_status)
        if self.attach and self.is_headless:
            self.session.connect(start_daemon=True)
        # In a terminal: once the first frame is out (MainScreen.FirstFrameDrawn). Connecting, or
        # starting the daemon, competed for the CPU with the first paint; nothing is lost by
        # waiting: hello and the snapshot come on connect.
        if self.demo:
            self.build_demo()
        elif self.initial_preset:
            self.call_after_refresh(self.load_preset_ref, self.initial_preset)

    def load_preset_ref(self, ref: str) -> bool:
        """Load a preset by name (workspace presets/ first, then shipped ones) or by path."""
        path = Path(ref).expanduser()
        if not path.is_file():
            path = list_presets(self.workspace).get(ref.removesuffix(".toml"), path)
        if not Path(path).is_file():
            self.notify(f"No preset {ref!r}", severity="error")
            return False
        return self.main_screen.load_preset(Path(path))

    @work(thread=True, exclusive=True, exit_on_error=False, group="demo")
    def build_demo(self) -> None:
        """Build the demo workspace in a subprocess (the engine's builder needs torch), then load it."""
        self.call_from_thread(self.notify, "Building the demo workspace (tiny model + images)...", timeout=4)
        try:
            proc = subprocess.run(
                engine_argv("demo", "--workspace", str(self.workspace)),
                cwd=self.workspace,
                env=engine_env(),
                capture_output=True,
                text=True,
                timeout=900,
            )
            ok, output = proc.returncode == 0, (proc.stderr or proc.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, output = False, str(exc)
        if not ok:
            self.call_from_thread(
                self.notify, f"Demo build failed: {output[-400:]}", title="Demo", severity="error", timeout=15
            )
            return
        self.call_from_thread(self.load_preset_ref, self.initial_preset or "demo")

    # --- engine ----------------------------------------------------------------------------

    def browse_dataset(self) -> None:
        """The dataset browser on the form's config."""
        from tui.screens.browser import BrowserScreen

        cfg = self.main_screen.build_config("browse the dataset")
        if cfg is not None:
            self.push_screen(BrowserScreen(cfg))

    def check_config(self, cfg: RunConfig) -> None:
        path = self.workspace / ".loratui" / f"{cfg.name}.check.toml"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, dump_resolved(cfg))
        except OSError as exc:
            self.report_error(exc, title="cannot write the config to check")
            return
        from tui.screens.check import CheckScreen

        self.push_screen(CheckScreen(path, self.check_command(path), self.workspace))

    # --- engine messages -------------------------------------------------------------------

    @on(MainScreen.FirstFrameDrawn)
    def _first_frame_drawn(self) -> None:
        if self.attach:
            self.session.connect(start_daemon=True)

    @on(EngineConnected)
    def _connected(self, message: EngineConnected) -> None:
        self.log.info("attached to the engine" + (" (started it)" if message.started else ""))
        self._controls_changed()

    @on(EngineDisconnected)
    def _disconnected(self, message: EngineDisconnected) -> None:
        self.session.running.clear()
        if message.error:
            self.run_state.add_log("error", message.reason)
            self.notify(
                f"{message.reason}; F5 or a queue key connects again",
                title="Engine",
                severity="error",
                timeout=10,
            )
        self._controls_changed()

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        self._act(self.session.apply(message.event, message.rebuilt))

    def _act(self, outcome: Outcome) -> None:
        for notice in outcome.notices:
            self.notify(notice.text, title=notice.title, severity=notice.severity, timeout=notice.timeout)
        if outcome.show_run:
            self.run_screen.state = self.session.current
            self.show_run()
        if outcome.controls_changed:
            self._controls_changed()

    def show_running(self, run: str | None = None, *, step: int = 1) -> bool:
        """Show another running run in the run view: `run` by id, else the next (step=1) or
        previous (-1) in queue order. Each run keeps its own state, so its chart, log, figures and
        samples come back as they are. Returns False (and says why) when there is none."""
        state = self.session.show(run) if run else self.session.cycle(step)
        if state is None:
            self.notify("No other run is training now", severity="warning", timeout=4)
            return False
        self.run_screen.state = state
        self._controls_changed()
        return True

    def _controls_changed(self) -> None:
        """Refresh the footers' keys, only when what they can do changed (each refresh rebuilds the
        footer: never on a timer or per event): connected, whether the shown run can be stopped,
        and whether more than one run is training (the run view's "next run" key)."""
        controls = (self.session.connected, self.can_control_run(), len(self.session.running) > 1)
        if controls != self._controls:
            self._controls = controls
            self.screen.refresh_bindings()

    @on(EngineLineSkipped)
    def _line_skipped(self, message: EngineLineSkipped) -> None:
        self.skipped_lines += 1
        self.log.warning(f"skipped engine line ({message.reason}): {message.line!r}")

    # --- errors ----------------------------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text, whatever the caller asks.

        Messages carry run names, paths and engine text: as markup, a run called "x[bold]y" showed
        as "xy" and its LoRA path was wrong. Widgets' `notify` pass markup=True explicitly, so the
        flag is ignored here rather than defaulted.
        """
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def report_error(self, exc: BaseException, *, title: str = "Error") -> None:
        """Show an error (message + hint) as a notification and in the log; never raise."""
        if isinstance(exc, LoratuiError):
            text = format_error(exc.to_dict())
        else:
            text = f"{type(exc).__name__}: {exc}"
        self.run_state.add_log("error", f"{title}: {text}")
        self.notify(text, title=title, severity="error", timeout=12)

    # --- navigation, status, palette -------------------------------------------------------

    def show_run(self) -> None:
        run_screen = self.run_screen
        if self.screen is not run_screen:
            if self._showing("tui.screens.check", "CheckScreen"):
                self.pop_screen()
            self.push_screen("run")

    def show_form(self) -> None:
        if self._run_screen is not None and self.screen is self._run_screen:
            self.pop_screen()

    def show_caption(self) -> None:
        """The WD14 caption screen, filled from the form's dataset folder and [caption_auto]."""
        from tui.screens.caption import CaptionScreen

        v = self.main_screen.form.values() if self.main_screen.is_mounted else {}
        dirs = v.get("dataset.dirs") or [""]
        self.push_screen(
            CaptionScreen(
                dirs[0] if isinstance(dirs, list) and dirs else "",
                v.get("caption_auto.tagger") or "",
                general_threshold=v.get("caption_auto.general_threshold") or 0.35,
                character_threshold=v.get("caption_auto.character_threshold") or 0.85,
                undesired_tags=v.get("caption_auto.undesired_tags") or (),
                captioner=v.get("caption_auto.captioner") or "wd14",
                model=v.get("caption_auto.model") or "",
                task=v.get("caption_auto.task") or "<CAPTION>",
                cwd=self.workspace,
            )
        )

    async def _check_bindings(self, key: str, priority: bool = False) -> bool:
        # Escape closes the Keys panel first, on every screen (each screen's own escape would leave
        # the screen behind the panel). Not a priority binding: the footer shows one binding per key,
        # and a hidden app-wide escape would take each screen's "esc Back" out of its footer.
        # By type name: importing HelpPanel (Markdown, markdown-it) cost 50 ms before the first frame.
        if priority and key == "escape" and self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
            return True
        return await super()._check_bindings(key, priority)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "history":
            # Not offered on the history screen itself: its footer needs the room. Asked at every
            # footer build, the first frame's included: no import of the history screen to answer.
            return not self._showing("tui.screens.history", "HistoryScreen")
        return True

    def action_history(self) -> None:
        """The loss-log history of the workspace (overlay, smoothing, config diff)."""
        from tui.screens.history import HistoryScreen

        if not isinstance(self.screen, HistoryScreen):
            self.push_screen(HistoryScreen(self.workspace))

    def _update_status(self) -> None:
        state = self.run_state
        text = Text()
        if state.status != "idle":
            text.append(f"{state.name or 'run'}: ", style="bold")
            # phase_text says "training 39/60" itself; other phases get the step count added.
            text.append(state.phase_text())
            if state.total_steps and state.step and state.phase != "train" and not state.finished:
                text.append(f" {state.step}/{state.total_steps}")
        self.main_screen.show_status(text) if self.main_screen.is_mounted else None

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from loratui_commands(self)

    # --- quitting --------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self.run_is_live():
            from tui.screens.dialogs import QuitModal

            self.push_screen(QuitModal(self.run_state.name or "run"), self._quit_choice)
        else:
            self.exit()

    def _quit_choice(self, choice: str | None) -> None:
        if choice == "stop":
            self.session.stop()
            self.exit()
        elif choice == "leave":
            self.exit()

    def on_unmount(self) -> None:
        # Hang up; the daemon and its runs go on (it exits on its own once idle with no client).
        self.session.close()
