"""CaptionScreen: auto-captioning of a dataset folder (WD14 tags, Florence-2 sentences, or both), with a preview.

The captioner runs as `python -m engine caption DIR --captioner C --tagger M --model F --json` in a
thread worker (the TUI never imports onnxruntime or torch). Its stdout carries protocol lines: `phase` events drive the progress bar,
`log` warnings are listed, `preview` holds the tags of a few images (F2, nothing written) and
`caption_finished` the counts or the error. When captions were written, `Captioned` goes up to the app.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Checkbox, Input, ProgressBar, Static

from engine import protocol
from engine.config import validate_field
from tui.client import PROJECT_ROOT, engine_argv, engine_env
from tui.widgets.footer import Footer

PREVIEW_COUNT = 5


def render_preview(items: list[dict[str, Any]]) -> Text:
    """Each previewed image: its name, the caption the tagger would write, and the current caption."""
    text = Text()
    for item in items:
        text.append(Path(str(item.get("image", "?"))).name, style="bold")
        error = item.get("error")
        if error:
            text.append(
                f"\n  error: {error.get('message', error) if isinstance(error, dict) else error}\n", "red"
            )
            continue
        text.append("\n  ")
        text.append(str(item.get("caption") or "(no tag above the thresholds)"), style="green")
        existing = item.get("existing")
        if existing is not None:
            text.append("\n  now: ", style="dim")
            text.append(str(existing), style="dim")
        text.append("\n")
    return text


class CaptionScreen(Screen):
    """Run the WD14 tagger on a dataset folder: preview a few images, then write the captions."""

    CSS_PATH = "caption.tcss"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="caption_back"),
        Binding(
            "f2",
            "preview",
            "Preview",
            tooltip="Show the tags of a few images, write nothing",
            id="caption_preview",
        ),
        Binding("f5", "caption", "Caption", tooltip="Write caption files for the images", id="caption_run"),
        Binding(
            "f4", "stop", "Stop", tooltip="Stop the tagger (written captions are kept)", id="caption_stop"
        ),
    ]

    @dataclass
    class EventReceived(Message):
        """A protocol event from the tagger subprocess."""

        event: dict[str, Any]

    @dataclass
    class TaggerExited(Message):
        """The tagger subprocess ended."""

        returncode: int | None
        stderr_tail: list[str] = field(default_factory=list)

    @dataclass
    class Captioned(Message):
        """Caption files were written (sent up to the app, e.g. to re-check the dataset)."""

        dataset: str
        summary: dict[str, Any]

    def __init__(
        self,
        dataset: str | Path = "",
        tagger: str | Path = "",
        *,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        undesired_tags: Sequence[str] = (),
        trigger_word: str = "",
        captioner: str | Sequence[str] = "wd14",
        model: str | Path = "",
        task: str = "<CAPTION>",
        argv: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        super().__init__()
        self._initial = {
            "dir": str(dataset),
            "tagger": str(tagger),
            "general": str(general_threshold),
            "character": str(character_threshold),
            "undesired": ", ".join(undesired_tags),
            "trigger": trigger_word,
            "captioner": captioner if isinstance(captioner, str) else ",".join(captioner),
            "model": str(model),
            "task": task,
        }
        self.argv = list(argv) if argv is not None else engine_argv("caption")
        self.cwd = cwd or PROJECT_ROOT
        self.preview_items: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.busy = False
        self._mode = ""
        self._dataset = ""
        self._proc: subprocess.Popen | None = None
        self._finished_seen = False

    def compose(self) -> ComposeResult:
        with Grid(id="caption-form"):
            for key, title, placeholder in (
                ("dir", "Dataset folder", "/data/mychar"),
                ("tagger", "Tagger folder (model.onnx + selected_tags.csv)", "/models/wd-swinv2-tagger-v3"),
                ("general", "General threshold", "0.35"),
                ("character", "Character threshold", "0.85"),
                ("undesired", "Undesired tags (comma-separated)", "e.g. simple background"),
                ("trigger", "Trigger word (written first)", "optional"),
                ("captioner", "Captioner: wd14, florence2, or florence2,wd14", "wd14"),
                ("model", "Florence-2 folder (transformers format)", "/models/Florence-2-base"),
                ("task", "Florence-2 task", "<CAPTION> | <DETAILED_CAPTION> | <MORE_DETAILED_CAPTION>"),
            ):
                box = Input(self._initial[key], placeholder=placeholder, id=f"caption-{key}")
                box.border_title = title
                yield box
        with Horizontal(id="caption-options"):
            yield Checkbox("Overwrite existing captions", id="caption-overwrite")
            yield Checkbox("Rating tag", id="caption-rating")
            yield Checkbox("Escape ( )", True, id="caption-escape")
        yield Static("F2 preview a few images, F5 write captions.", id="caption-status")
        yield ProgressBar(id="caption-progress", show_eta=False)
        with VerticalScroll(id="caption-body"):
            yield Static("", id="caption-preview")
        yield Footer()

    # --- building the command ------------------------------------------------------------------

    def _value(self, key: str) -> str:
        return self.query_one(f"#caption-{key}", Input).value.strip()

    def _checked(self, key: str) -> bool:
        return self.query_one(f"#caption-{key}", Checkbox).value

    def command(self, preview: int = 0) -> list[str]:
        """The tagger argv for the form's values; raises ValueError with a message for bad input."""
        dataset, tagger = self._value("dir"), self._value("tagger")
        names = [n.strip() for n in (self._value("captioner") or "wd14").split(",") if n.strip()]
        if not dataset:
            raise ValueError("give the dataset folder")
        bad = [n for n in names if n not in ("wd14", "florence2")]
        if bad or not names:
            raise ValueError(f"captioner: {bad[0] if bad else ''!r} is not wd14 or florence2")
        if "wd14" in names and not tagger:
            raise ValueError("give the tagger folder (model.onnx + selected_tags.csv)")
        argv = [*self.argv, dataset, "--json"]
        if tagger:
            argv += ["--tagger", tagger]
        if names != ["wd14"]:
            problem = validate_field("caption_auto.task", self._value("task") or "<CAPTION>")
            if problem:
                raise ValueError(f"task: {problem}")
            if not self._value("model"):
                raise ValueError("give the Florence-2 model folder")
            argv += ["--captioner", ",".join(names), "--model", self._value("model")]
            argv += ["--task", self._value("task") or "<CAPTION>"]
        for key, dotted in (("general", "general_threshold"), ("character", "character_threshold")):
            raw = self._value(key)
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key} threshold: {raw!r} is not a number") from None
            problem = validate_field(f"caption_auto.{dotted}", value)
            if problem:
                raise ValueError(f"{key} threshold: {problem}")
            argv += [f"--{key}-threshold", repr(value)]
        if self._value("undesired"):
            argv += ["--undesired-tags", self._value("undesired")]
        if self._value("trigger"):
            argv += ["--trigger-word", self._value("trigger")]
        if self._checked("overwrite"):
            argv.append("--overwrite")
        if self._checked("rating"):
            argv.append("--with-rating")
        if not self._checked("escape"):
            argv.append("--no-escape")
        if preview:
            argv += ["--preview", str(preview)]
        return argv

    # --- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Stop is dimmed in the footer while no tagger is going (it had nothing to stop).
        if action == "stop":
            return True if self.busy else None
        return True

    def action_preview(self) -> None:
        self._start("preview")

    def action_caption(self) -> None:
        self._start("caption")

    def action_stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            self._status(Text("Stopping...", style="yellow"))

    def _start(self, mode: str) -> None:
        if self.busy:
            self.notify("The tagger is already running", severity="warning")
            return
        try:
            argv = self.command(PREVIEW_COUNT if mode == "preview" else 0)
        except ValueError as exc:
            self._status(Text(str(exc), style="red"))
            return
        self.busy = True
        self.refresh_bindings()
        self._mode = mode
        self._dataset = self._value("dir")
        self._finished_seen = False
        self.warnings = []
        self.error = None
        if mode == "caption":
            self.summary = None
        self.query_one(ProgressBar).update(total=None, progress=0)
        self._status(Text("Loading the tagger...", style="bold"))
        self.run_tagger(argv)

    @work(thread=True, exclusive=True, exit_on_error=False, group="caption")
    def run_tagger(self, argv: list[str]) -> None:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=engine_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            self.post_message(self.TaggerExited(None, [str(exc)]))
            return
        self._proc = proc
        tail: deque[str] = deque(maxlen=40)
        # stderr is drained beside stdout so a chatty child never blocks on a full pipe.
        drain = threading.Thread(
            target=lambda: tail.extend(line.rstrip() for line in proc.stderr), daemon=True
        )
        drain.start()
        for line in proc.stdout:
            event = protocol.decode(line)
            if event is not None:
                self.post_message(self.EventReceived(event))
        code = proc.wait()
        drain.join(timeout=5)
        self.post_message(self.TaggerExited(code, list(tail)))

    # --- events from the worker ------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#caption-status", Static).update(text)

    def _show_body(self) -> None:
        text = render_preview(self.preview_items) if self.preview_items else Text()
        if self.error:
            text.append(f"error: {self.error.get('message', '')}\n", style="bold red")
            if self.error.get("where"):
                text.append(f"  where: {self.error['where']}\n", style="red")
            if self.error.get("hint"):
                text.append(f"  hint: {self.error['hint']}\n", style="dim")
        for warning in self.warnings[-50:]:
            text.append(f"warning: {warning}\n", style="yellow")
        self.query_one("#caption-preview", Static).update(text)

    @on(EventReceived)
    def _event(self, message: EventReceived) -> None:
        event = message.event
        kind = event.get("type")
        if kind == protocol.PHASE and event.get("name") == "caption":
            done, total = int(event.get("done") or 0), int(event.get("total") or 0)
            self.query_one(ProgressBar).update(total=max(total, 1), progress=done)
            self._status(Text(f"Captioning {done}/{total}"))
        elif kind == protocol.PHASE and event.get("name") == "load_model":
            self._status(Text("Loading the tagger...", style="bold"))
        elif kind == protocol.LOG and event.get("level") in ("warning", "error"):
            self.warnings.append(str(event.get("message", "")))
            self._show_body()
        elif kind == "preview":
            self._finished_seen = True
            self.preview_items = list(event.get("items") or [])
            self._status(Text(f"Preview of {len(self.preview_items)} images (nothing written)", style="bold"))
            self._show_body()
        elif kind == "caption_finished":
            self._finished_seen = True
            self._finished(event)

    def _finished(self, event: dict[str, Any]) -> None:
        status = event.get("status")
        if status == "done":
            self.summary = {k: v for k, v in event.items() if k not in ("type", "time", "error", "status")}
            written, skipped, failed = (event.get(k, 0) for k in ("written", "skipped", "failed"))
            self._status(
                Text(
                    f"Wrote {written} caption files ({skipped} already captioned, {failed} unreadable) "
                    f"in {event.get('seconds', 0)} s on {event.get('device', '?')}",
                    style="bold green",
                )
            )
            self.post_message(self.Captioned(self._dataset, dict(self.summary)))
        elif status == "failed":
            self.error = event.get("error") or {"message": "the tagger failed"}
            self._status(Text(f"Failed: {self.error.get('message', '')}", style="bold red"))
        else:
            self._status(Text("Stopped (captions written so far are kept)", style="yellow"))
        self._show_body()

    @on(TaggerExited)
    def _exited(self, message: TaggerExited) -> None:
        self.busy = False
        self.refresh_bindings()
        self._proc = None
        if not self._finished_seen:
            if message.returncode is not None and message.returncode < 0:
                self._status(Text("Stopped (captions written so far are kept)", style="yellow"))
            else:
                tail = "\n".join(message.stderr_tail[-5:]) or "no output"
                self.error = {"message": f"the tagger exited with {message.returncode}: {tail}"}
                self._status(Text(f"The tagger exited with {message.returncode}", style="bold red"))
                self._show_body()

    def on_unmount(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
