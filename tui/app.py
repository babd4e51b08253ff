"""The loratui Textual app: run form, live run view, dataset check; `run(argv)` is the entry point.

The app owns the engine client (tui/client.py) and the state of the shown run (tui/runstate.py);
screens get their data from it ("attributes down") and call its methods for anything that touches
the engine. Two engine modes:

- serve: `python -m engine serve --workspace W` runs for the app's lifetime (the queue owner); Run
  adds the form's config to the queue.
- train: until serve exists (or when asked for), Run starts `python -m engine train CONFIG` for one run.

The engine runs in its own process session: quitting during a run asks whether to leave it going
(the default: training continues and the next start re-attaches from runs/<name>/events.jsonl) or
to stop it. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine import protocol
from engine.config import RunConfig, dump_resolved, list_presets
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from tui.client import EngineClient, RunFollower, engine_argv, engine_env, engine_has, find_unfinished_run
from tui.messages import EngineEvent, EngineExited, EngineLineSkipped, EngineStarted, EngineStderr
from tui.runstate import RunState, format_error
from tui.screens.caption import CaptionScreen
from tui.screens.check import CheckScreen
from tui.screens.dialogs import QuitModal
from tui.screens.main import MainScreen
from tui.screens.run import RunScreen

TrainCommand = Callable[[Path], Sequence[str]]
SERVE_LOG_ECHO = re.compile(r"\[serve\] (debug|info|warning|error): ")


class LoratuiApp(App):
    """The terminal UI.

    Args:
        workspace: the folder with presets/, runs/, queue/ (default: the current directory).
        mode: "serve", "train" or None (serve when the engine has it, else train).
        train_command: argv for one run of a config file (default `python -m engine train CONFIG`).
        serve_command: argv of the queue server (default `python -m engine serve --workspace W`).
        check_command: argv of the dataset check of a config file.
        preset: a preset name or file to load into the form at start.
        demo: build the demo workspace first, then load the demo preset.
        attach: re-attach to a run an earlier loratui left going.
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
        mode: str | None = None,
        train_command: TrainCommand | None = None,
        serve_command: Sequence[str] | None = None,
        check_command: TrainCommand | None = None,
        preset: str | None = None,
        demo: bool = False,
        attach: bool = True,
    ) -> None:
        super().__init__()
        self.workspace = Path(workspace or Path.cwd()).resolve()
        self.mode = mode or ("serve" if serve_command or engine_has("serve") else "train")
        self.train_command: TrainCommand = train_command or (
            lambda cfg: engine_argv("train", str(cfg), "--workspace", str(self.workspace))
        )
        self.serve_command = list(serve_command or engine_argv("serve", "--workspace", str(self.workspace)))
        self.check_command: TrainCommand = check_command or (
            lambda cfg: engine_argv("check", str(cfg), "--json")
        )
        self.initial_preset = preset
        self.demo = demo
        self.attach = attach
        self.client: EngineClient | None = None
        self.follower: RunFollower | None = None
        self.run_state = RunState()
        self.runs: dict[str, RunState] = {}
        self.engine_info: dict[str, Any] = {}
        self.queue_entries: list[dict[str, Any]] = []
        self.skipped_lines = 0
        self.detached = False
        self._stop_sent = False
        self._ids = count(1)
        self.main_screen = MainScreen(self.workspace)
        self.run_screen = RunScreen(self.run_state)
        self.animation_level = "none"  # every repaint crosses the SSH link

    # --- start-up --------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.install_screen(self.main_screen, "main")
        self.install_screen(self.run_screen, "run")
        self.push_screen("main")
        self.set_interval(0.5, self._update_status)
        if self.mode == "serve":
            self._start_client(self.serve_command)
        if self.attach:
            self._reattach()
        if self.demo:
            self.build_demo()
        elif self.initial_preset:
            self.call_after_refresh(self.load_preset_ref, self.initial_preset)

    def _reattach(self) -> None:
        run_dir = find_unfinished_run(self.workspace)
        if run_dir is None:
            return
        self.run_state = RunState(name=run_dir.name, run_dir=str(run_dir), status="starting")
        self.run_screen.state = self.run_state
        self.follower = RunFollower(run_dir, self)
        self.follower.start()
        self.notify(f"Re-attached to run {run_dir.name} (left going by an earlier loratui)", timeout=6)
        self.call_after_refresh(self.show_run)

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

    def _start_client(self, argv: Sequence[str]) -> EngineClient:
        self.client = EngineClient(argv, self, cwd=self.workspace)
        self.detached = False
        self._stop_sent = False
        self.client.start()
        return self.client

    def can_control_run(self) -> bool:
        """Whether stop / save now can reach the engine of the shown run."""
        return bool(self.client and self.client.running and self.run_state.active and self.follower is None)

    def start_run(self, cfg: RunConfig) -> None:
        """Run the form's config: add it to the queue (serve) or start `engine train` on it."""
        text = dump_resolved(cfg)
        if self.mode == "serve" and self.client is not None and self.client.running:
            self.client.send(protocol.command(protocol.CMD_ENQUEUE, toml=text, id=next(self._ids)))
            self.notify(f"Added {cfg.name} to the queue", timeout=4)
            return
        if self.run_state.active:
            self.notify(
                f"Run {self.run_state.name} is still going; stop it first (x in the run view)",
                severity="warning",
            )
            return
        path = self.workspace / ".loratui" / f"{cfg.name}.toml"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        except OSError as exc:
            self.report_error(exc, title="cannot write the run config")
            return
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        self._set_run(RunState(name=cfg.name, status="starting"))
        self.run_state.add_log("info", f"starting: {' '.join(self.train_command(path))}")
        self._start_client(self.train_command(path))
        self.show_run()

    def _set_run(self, state: RunState) -> None:
        self.run_state = state
        self.run_screen.state = state
        if state.run:
            self.runs[state.run] = state

    def stop_run(self) -> None:
        if not self.can_control_run():
            self.notify("No run of this loratui is going", severity="warning")
            return
        self.client.send(protocol.command(protocol.CMD_STOP, run=self.run_state.run, save=True))
        self._stop_sent = True
        self.run_state.add_log("warning", "stop requested: a checkpoint is saved, then the run ends")
        self.notify("Stopping the run (saving a checkpoint first)", timeout=4)

    def save_now(self) -> None:
        if not self.can_control_run():
            self.notify("No run of this loratui is going", severity="warning")
            return
        self.client.send(protocol.command(protocol.CMD_SAVE_NOW, run=self.run_state.run))
        self.run_state.add_log("info", "save requested: a checkpoint is written at the next step")

    def sample_now(self) -> None:
        if not self.can_control_run():
            self.notify("No run of this loratui is going", severity="warning")
            return
        self.client.send(protocol.command(protocol.CMD_SAMPLE_NOW, run=self.run_state.run))
        self.run_state.add_log("info", "samples requested: generated at the next step")

    def can_sample_now(self, run_dir: str | os.PathLike) -> bool:
        """Whether `sample_now` reaches the run of this folder (the shown, controllable run)."""
        shown = self.run_state.run_dir
        return self.can_control_run() and bool(shown) and Path(shown).resolve() == Path(run_dir).resolve()

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
        self.push_screen(CheckScreen(path, self.check_command(path), self.workspace))

    # --- engine messages -------------------------------------------------------------------

    @on(EngineStarted)
    def _engine_started(self, message: EngineStarted) -> None:
        self.log.info(f"engine started, pid {message.pid}: {message.argv}")

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        kind = event.get("type")
        run = event.get("run")
        if kind == protocol.HELLO:
            self.engine_info = event
            if event.get("protocol") != protocol.PROTOCOL_VERSION:
                self.notify(
                    f"Engine speaks protocol {event.get('protocol')}, this UI {protocol.PROTOCOL_VERSION}",
                    severity="warning",
                )
            return
        if kind == protocol.QUEUE:
            self.queue_entries = list(event.get("entries") or [])
            return
        if kind == protocol.ACK:
            if not event.get("ok", True):
                err = event.get("error")
                text = format_error(err) if isinstance(err, dict) else str(err or "refused")
                self.notify(text, title="Engine refused", severity="error", timeout=10)
                self.run_state.add_log("error", text)
            return
        if kind == protocol.RUN_STARTED:
            state = self.runs.get(run) if run is not None else None
            if state is None:
                current = self.run_state
                # The run this app started (train mode) is already the current state.
                reuse = current.status in ("starting", "idle") and (run is None or current.run in (None, run))
                state = current if reuse else RunState()
            state.apply(event)
            self._set_run(state)
            if message.source == "engine":
                # The shown run is now our engine's own: stop following a re-attached one, so stop,
                # save and crash reports apply to this run.
                self._stop_following()
                self.show_run()
            return
        state = self.runs.get(run, self.run_state) if run is not None else self.run_state
        if not state.apply(event):
            return
        if kind == protocol.LOG and event.get("level") == "error":
            self.notify(str(event.get("message", "")), title="Engine error", severity="error", timeout=10)
        elif kind == protocol.LOG and event.get("level") == "warning":
            self.notify(str(event.get("message", "")), title="Engine warning", severity="warning", timeout=8)
        elif kind == protocol.RUN_FINISHED:
            self._run_finished(state)

    def _run_finished(self, state: RunState) -> None:
        if state.status == "done":
            where = f": {state.lora}" if state.lora else ""
            self.notify(f"Run {state.name} done{where}", title="Finished", timeout=10)
        elif state.status == "stopped":
            self.notify(f"Run {state.name} stopped", severity="warning", timeout=6)
        else:
            text = format_error(state.error) if state.error else f"run {state.status}"
            self.notify(text, title=f"Run {state.name} {state.status}", severity="error", timeout=15)
        self._stop_following()

    def _stop_following(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None

    @on(EngineLineSkipped)
    def _line_skipped(self, message: EngineLineSkipped) -> None:
        self.skipped_lines += 1
        self.log.warning(f"skipped engine line ({message.reason}): {message.line!r}")
        self.run_state.add_log("debug", f"skipped engine output ({message.reason}): {message.line}")

    @on(EngineStderr)
    def _stderr(self, message: EngineStderr) -> None:
        for line in message.lines:
            if SERVE_LOG_ECHO.match(line):
                # `engine serve` echoes each of its log events to stderr (for a headless queue);
                # the event is in the log already, twice was noise in a 5-line log at 80x24.
                continue
            level = "error" if line.startswith(("Traceback", "error:")) else "stderr"
            self.run_state.add_log(level, line)

    @on(EngineExited)
    def _engine_exited(self, message: EngineExited) -> None:
        state = self.run_state
        code = message.returncode
        tail = " | ".join(line for line in message.stderr_tail[-3:] if line.strip())
        # A run followed from its folder (re-attached) belongs to an engine that is not our child:
        # our engine exiting (e.g. a second `serve` refused because that one owns the queue) says
        # nothing about that run, which goes on.
        ours = self.follower is None
        if state.active and ours and not self._stop_sent:
            # The run did not report its end: the engine died under it.
            state.status = "interrupted"
            state.error = {
                "message": f"the engine exited unexpectedly (exit code {code})",
                "hint": "see the log below; resume the run from its last checkpoint",
                "where": tail,
            }
            state.finished_at = time.time()
            state.version += 1
            state.add_log("error", format_error(state.error))
            self.notify(format_error(state.error), title="Engine crashed", severity="error", timeout=15)
        elif state.active and ours:
            state.status = "stopped"
            state.finished_at = time.time()
            state.version += 1
        elif not message.expected and code not in (0, None) and (not state.finished or not ours):
            text = f"the engine exited with code {code}" + (f": {tail}" if tail else "")
            state.add_log("error", text)
            self.notify(text, title="Engine exited", severity="error", timeout=10)
        elif code is None:
            text = "; ".join(message.stderr_tail) or "the engine could not be started"
            state.add_log("error", text)
            self.notify(text, title="Engine", severity="error", timeout=10)
        self.refresh_bindings()

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
        if not isinstance(self.screen, RunScreen):
            if isinstance(self.screen, CheckScreen):
                self.pop_screen()
            self.push_screen("run")

    def show_form(self) -> None:
        if isinstance(self.screen, RunScreen):
            self.pop_screen()

    def show_caption(self) -> None:
        """The WD14 caption screen, filled from the form's dataset folder and [caption_auto]."""
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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "history":
            from tui.screens.history import HistoryScreen

            # Not offered on the history screen itself: its footer needs the room.
            return not isinstance(self.screen, HistoryScreen)
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
            text.append(state.phase_text())
            if state.total_steps and state.step:
                text.append(f" {state.step}/{state.total_steps}")
            # F7 has no footer entry (80 columns): this line is where it is named.
            text.append("  F7 to watch" if state.active else "  F7 to view", style="dim")
        self.main_screen.show_status(text) if self.main_screen.is_mounted else None

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        main = self.main_screen
        yield SystemCommand("Run", "Validate the form and start the run (F5)", main.action_run)
        yield SystemCommand("Check dataset", "Check the config and dataset (F6)", main.action_check)
        yield SystemCommand(
            "Save preset", "Save over the loaded preset, comments kept (F2)", main.action_save
        )
        yield SystemCommand(
            "Browse dataset", "Images, buckets, crops, captions; edit and exclude", self.browse_dataset
        )
        yield SystemCommand("Save preset as", "Save the form as a new preset (F3)", main.action_save_as)
        yield SystemCommand(
            "Toggle advanced fields", "Show or hide advanced fields (F4)", main.action_toggle_advanced
        )
        yield SystemCommand("Show run", "The live run view (F7)", self.show_run)
        yield SystemCommand("Show form", "The run form", self.show_form)
        yield SystemCommand(
            "Caption images (WD14 / Florence-2)",
            "Caption a dataset folder with WD14 tags and/or Florence-2 sentences",
            self.show_caption,
        )
        yield SystemCommand(
            "Test ComfyUI connection",
            "Server reachable, [collect] node ids and their classes, the server's object info",
            main.action_test_connection,
        )
        yield SystemCommand(
            "Run history", "Past runs: overlay loss curves, smoothing, config diff (F10)", self.action_history
        )
        yield SystemCommand("Stop run", "Stop the run, saving a checkpoint first (x)", self.stop_run)
        yield SystemCommand("Save checkpoint now", "Write a checkpoint at the next step (n)", self.save_now)
        yield SystemCommand("Sample now", "Generate samples at the next step (p)", self.sample_now)
        yield SystemCommand(
            "Toggle loss / learning rate chart", "(l in the run view)", self.run_screen.action_toggle_lr
        )
        for name, path in list_presets(self.workspace).items():
            yield SystemCommand(
                f"Load preset {name}", str(path), lambda p=path: self.main_screen.load_preset(Path(p))
            )

    # --- quitting --------------------------------------------------------------------------

    def run_is_live(self) -> bool:
        """A run is going that this app can stop (its engine is our child)."""
        return bool(self.client and self.client.running and self.run_state.active)

    async def action_quit(self) -> None:
        if self.run_is_live() or (self.follower is not None and self.run_state.active):
            self.push_screen(QuitModal(self.run_state.name or "run"), self._quit_choice)
        else:
            self.exit()

    def _quit_choice(self, choice: str | None) -> None:
        if choice == "stop":
            if self.can_control_run():
                self.client.send(protocol.command(protocol.CMD_STOP, run=self.run_state.run, save=True))
                self._stop_sent = True
                self.client.expect_exit()
                if self.mode == "serve":
                    self.client.send(protocol.command(protocol.CMD_SHUTDOWN))
            self.detach()
            self.exit()
        elif choice == "leave":
            self.detach()
            self.exit()

    def detach(self) -> None:
        """Stop listening; the engine (own session) goes on and keeps writing its run folder."""
        self.detached = True
        if self.client is not None:
            self.client.detach()
        if self.follower is not None:
            self.follower.stop()

    def on_unmount(self) -> None:
        # Workers are cancelled before Unmount; the engine child is ours to end unless we detached.
        if self.follower is not None:
            self.follower.stop()
        client = self.client
        if client is None or self.detached or not client.running:
            return
        if self.run_state.active:
            # Closing without the dialog (e.g. SIGTERM): never kill training, leave it going.
            client.detach()
            return
        if self.mode == "serve":
            client.expect_exit()
            client.send(protocol.command(protocol.CMD_SHUTDOWN))
            try:
                client.process.wait(2.0)
                return
            except subprocess.TimeoutExpired:
                pass
        client.terminate(timeout=3.0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loratui", description="Terminal LoRA trainer")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: current directory)")
    parser.add_argument("--no-mouse", action="store_true", help="do not capture the mouse (lighter over SSH)")
    parser.add_argument(
        "--demo", action="store_true", help="build the demo workspace and load the demo preset"
    )
    parser.add_argument("--preset", default=None, help="preset name or file to load into the form")
    parser.add_argument(
        "--engine",
        choices=("serve", "train"),
        default=None,
        help="engine mode (default: serve when available)",
    )
    parser.add_argument(
        "--images",
        choices=("auto", "kitty", "sixel", "halfblock", "off"),
        default="auto",
        help="how images are drawn: detect, Kitty graphics, Sixel, Unicode half-blocks, or not at all",
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def run(argv: Sequence[str] | None = None) -> int:
    """`loratui [--workspace DIR] [--no-mouse] [--demo] [--preset NAME]`: open the TUI."""
    args = parse_args(argv)
    workspace = Path(args.workspace or Path.cwd())
    if not workspace.is_dir():
        print(
            f"error: workspace folder not found: {workspace}\n  hint: create it or pass --workspace DIR",
            file=sys.stderr,
        )
        return 2
    from tui import termimage

    termimage.setup(args.images)  # before Textual owns the terminal: detection queries it
    app = LoratuiApp(workspace, mode=args.engine, preset=args.preset, demo=args.demo)
    app.run(mouse=not args.no_mouse)
    return 0
