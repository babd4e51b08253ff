"""`loratui` in a real 80x24 pseudo-terminal attaching to a daemon that is training a run: the first
frame comes before the connection (the form and the connection follow it), and the hello and snapshot
that arrive afterwards are not lost: the run view opens on the running run by itself."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

from serve_harness import write_config

from tests.daemon_support import Client, stop_daemon
from tests.tui_support import FAKE_ENGINE

ROOT = FAKE_ENGINE.parent.parent
ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[PX^_].*?\x1b\\\\|\x1b\][^\x07]*\x07")


def test_tui_in_a_pty_attaches_after_its_first_frame_and_shows_the_running_run(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    monkeypatch.setenv("LORATUI_SERVE_IDLE_S", "30")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("LORATUI_TRAIN_CMD", f"{sys.executable} {FAKE_ENGINE} --steps 5 --hold")
    client = Client(ws)
    pid = fd = None
    try:
        run = client.send("enqueue", config=str(write_config(ws, "heldrun")))["run"]
        client.wait_for(lambda e: e.get("type") == "step" and e.get("run") == run and e["step"] == 5, 60)
        pid, fd = pty.fork()
        if pid == 0:  # the TUI, on the pty
            os.environ["TERM"] = "xterm-256color"
            os.execv(sys.executable, [sys.executable, "-m", "tui.cli", "--workspace", str(ws)])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        seen, order = b"", []
        deadline = time.monotonic() + 60
        marks = {"first frame": b"Preset", "run view": b"training 5/5", "queue": b"Queue: 1 entry"}
        while len(order) < len(marks) and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                plain = ESCAPES.sub(b"", seen)
                order += [name for name, text in marks.items() if name not in order and text in plain]
        assert order[:1] == ["first frame"] and set(order) == set(marks), (
            order,
            ESCAPES.sub(b"", seen)[-800:],
        )
        assert b"already owned" not in seen and b"exited with code" not in seen  # no error toast
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if fd is not None:
            os.close(fd)
        client.close()
        stop_daemon(ws)


def test_the_start_path_leaves_heavy_modules_for_later():
    """What `loratui` imports before its first frame: none of the modules only later screens need
    (each cost 50-250 ms of a start measured by bench/tui_start.py)."""
    import subprocess

    later = [
        "numpy",  # textual-image's renderers
        "textual_image",  # loaded at the first picture
        "PIL",  # thumbnails, the sample strip
        "plotext",  # the loss chart
        "psutil",  # the history screen's liveness rule
        "markdown_it",  # Textual's HelpPanel
        "tui.screens.run",
        "tui.screens.history",
        "tui.screens.caption",
        "tui.screens.check",
    ]
    probe = "import sys, tui.app; print(' '.join(sorted(set(sys.argv[1:]) & set(sys.modules))))"
    out = subprocess.run(
        [sys.executable, "-c", probe, *later],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "", f"imported before the first frame: {out}"


async def test_save_as_opens_its_dialog_imported_on_demand(tmp_path):
    from tests.tui_support import make_workspace, wait_until
    from tui.app import LoratuiApp

    app = LoratuiApp(make_workspace(tmp_path / "ws"), preset="mine", attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset")
        await pilot.press("f3")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "PresetNameModal", what="save-as dialog")
