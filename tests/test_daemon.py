"""The per-workspace daemon on its Unix socket: start on demand, hello + snapshot, many clients,
acks to the sender only, the peer uid check, stale sockets, slow clients, idle exit, adoption after
kill -9. Real processes and sockets; the fast stand-in trainer (tests/fake_train.py)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from daemon_support import REPO, Client, daemon_env, stop_daemon
from serve_harness import add_image, write_config

from engine import protocol
from engine.daemon.connect import connect, try_connect
from engine.daemon.hub import Hub
from engine.daemon.paths import MAX_SOCKET_PATH, socket_path
from engine.runqueue import owner_pid


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    add_image(tmp_path)
    daemon_env(monkeypatch)
    yield tmp_path
    stop_daemon(tmp_path)


def test_socket_path_is_in_the_workspace_or_short_for_a_deep_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "rt"))
    (tmp_path / "rt").mkdir()
    assert socket_path(tmp_path) == tmp_path.resolve() / ".loratui" / "engine.sock"
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path(deep)
    assert path.parent == tmp_path / "rt" / "loratui"
    assert len(os.fsencode(str(path))) <= MAX_SOCKET_PATH
    assert socket_path(deep) == path  # every client finds the same one
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert socket_path(deep).parent == Path(f"/tmp/loratui-{os.getuid()}")


def test_first_client_starts_the_daemon_and_gets_hello_then_the_queue(ws):
    a = Client(ws)
    try:
        assert a.conn.started
        hello = a.wait_for(lambda e: True)
        assert hello["type"] == "hello" and hello["running"] == [] and hello["pid"] == owner_pid(ws / "queue")
        assert (
            a.events[1]["type"] == "queue"
            if len(a.events) > 1
            else a.wait_for(lambda e: e["type"] == "queue")
        )
        path = socket_path(ws)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        daemon = psutil.Process(hello["pid"])
        assert os.getsid(daemon.pid) == daemon.pid  # its own session: our hang-up never reaches it
        assert Path(f"/proc/{daemon.pid}/status").read_text().count("SigIgn")  # SIGHUP ignored, below
        ignored = int(
            next(
                ln
                for ln in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
                if ln.startswith("SigIgn")
            ).split()[1],
            16,
        )
        assert ignored & (1 << (signal.SIGHUP - 1))
    finally:
        a.close()


def test_two_clients_see_every_step_and_acks_go_to_the_sender(ws):
    a, b = Client(ws), Client(ws)
    try:
        assert not b.conn.started
        ack = a.send("enqueue", config=str(write_config(ws, "two", steps=12)))
        run = ack["run"]
        for c in (a, b):
            c.wait_for(lambda e: e.get("type") == "run_finished" and e.get("run") == run)
        steps_a = [e["step"] for e in a.of_type("step")]
        steps_b = [e["step"] for e in b.of_type("step")]
        assert steps_a == steps_b == list(range(1, 13))
        assert not [e for e in b.of_type("ack") if e.get("id") == ack["id"]]  # b never asked
    finally:
        a.close()
        b.close()


def test_a_client_that_hangs_up_does_not_disturb_the_others(ws):
    a, b = Client(ws), Client(ws)
    try:
        run = a.send("enqueue", config=str(write_config(ws, "hang", steps=40)))["run"]
        a.wait_for(lambda e: e.get("type") == "step")
        a.close()
        finished = b.wait_for(lambda e: e.get("type") == "run_finished" and e.get("run") == run)
        assert finished["status"] == "done"
        assert [e["step"] for e in b.of_type("step")][-1] == 40
    finally:
        b.close()


def test_a_late_client_gets_the_running_run_in_hello(ws, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.05")
    a = Client(ws)
    try:
        run = a.send("enqueue", config=str(write_config(ws, "late", steps=200)))["run"]
        a.wait_for(lambda e: e.get("type") == "step" and e.get("step", 0) >= 3)
        b = Client(ws)
        hello = b.wait_for(lambda e: e["type"] == "hello")
        (running,) = hello["running"]
        assert running["run"] == run and running["name"] == "late"
        assert Path(running["run_dir"], "events.jsonl").is_file()
        queue = b.wait_for(lambda e: e["type"] == "queue")
        assert [e["status"] for e in queue["entries"]] == ["running"]
        # the live stream follows the snapshot
        b.wait_for(lambda e: e.get("type") == "step" and e.get("step", 0) > running["step"])
        assert b.send("stop", run=run, save=True)["ok"]
        assert a.wait_for(lambda e: e.get("type") == "run_finished")["status"] == "stopped"
        b.close()
    finally:
        a.close()


def test_another_users_connection_is_refused_with_a_log_line(tmp_path):
    logs: list[tuple[str, str]] = []
    attached = []
    hub = Hub(
        tmp_path / "s" / "engine.sock",
        on_attach=attached.append,
        on_command=lambda link, m: None,
        on_detach=lambda link, r: None,
        log=lambda message, level: logs.append((level, message)),
        allowed_uid=os.getuid() + 1,  # the daemon's user, as seen from a connection of ours
    )
    hub.start()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(hub.path))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        sock.close()
        assert b"refused" in data  # told why, then closed
        assert attached == []
        deadline = time.monotonic() + 5
        while not logs and time.monotonic() < deadline:
            time.sleep(0.02)
        level, message = logs[0]
        assert level == "warning"
        assert f"refused a connection from uid {os.getuid()}" in message and f"pid {os.getpid()}" in message
    finally:
        hub.close()


def test_a_slow_client_is_dropped_and_the_others_keep_their_events(tmp_path):
    detached: list[str] = []
    links = []
    hub = Hub(
        tmp_path / "engine.sock",
        on_attach=lambda link: (links.append(link), hub.subscribe(link)),
        on_command=lambda link, m: None,
        on_detach=lambda link, reason: detached.append(reason),
        log=lambda message, level: None,
        max_buffer=256 << 10,
    )
    hub.start()
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(hub.path))  # never reads
    fast = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fast.connect(str(hub.path))
    got = bytearray()
    reader = threading.Thread(
        target=lambda: [got.extend(c) for c in iter(lambda: fast.recv(65536), b"")], daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while len(links) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        event = protocol.log("x" * 1000)
        t0 = time.monotonic()
        for i in range(2000):  # ~2 MB: far more than the slow client's buffer and socket take
            hub.broadcast(event)
            if i % 50 == 0:
                time.sleep(0.005)  # a training pace the fast reader keeps up with
        assert time.monotonic() - t0 < 10  # broadcasting never waited for the slow reader
        deadline = time.monotonic() + 5
        while not detached and time.monotonic() < deadline:
            time.sleep(0.02)
        assert detached and "behind" in detached[0]
        assert hub.client_count == 1
        while got.count(b"\n") < 2000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got.count(b"\n") == 2000
    finally:
        hub.close()
        fast.shutdown(socket.SHUT_RDWR)  # ends the reader's recv even if the hub kept the link open
        reader.join(5)
        slow.close()
        fast.close()


def test_a_stale_socket_of_a_dead_daemon_is_replaced(ws):
    path = socket_path(ws)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what kill -9 leaves
    assert try_connect(ws) is None
    c = Client(ws)
    try:
        assert c.wait_for(lambda e: e["type"] == "hello")["pid"] == owner_pid(ws / "queue")
    finally:
        c.close()


def test_the_daemon_exits_when_idle_with_no_client(tmp_path, monkeypatch):
    add_image(tmp_path)
    daemon_env(monkeypatch, idle_s=0.5)
    conn = connect(tmp_path)
    pid = owner_pid(tmp_path / "queue")
    try:
        time.sleep(1.0)
        assert psutil.pid_exists(pid)  # a client is attached: it stays
    finally:
        conn.close()
    psutil.Process(pid).wait(10)
    assert not socket_path(tmp_path).exists()


def test_kill_9_of_the_daemon_mid_run_the_next_client_adopts_the_worker(ws, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.05")
    a = Client(ws)
    run = a.send("enqueue", config=str(write_config(ws, "orphan", steps=80)))["run"]
    a.wait_for(lambda e: e.get("type") == "step" and e.get("step", 0) >= 2)
    daemon = a.of_type("hello")[0]["pid"]
    os.kill(daemon, signal.SIGKILL)
    psutil.Process(daemon).wait(5) if psutil.pid_exists(daemon) else None
    a.close()
    b = Client(ws)  # starts a fresh daemon over the stale socket
    try:
        hello = b.wait_for(lambda e: e["type"] == "hello")
        assert hello["pid"] != daemon
        assert [r["run"] for r in hello["running"]] == [run]
        finished = b.wait_for(lambda e: e.get("type") == "run_finished" and e.get("run") == run, 60)
        assert finished["status"] == "done"
    finally:
        b.close()


def test_serve_stdio_mode_still_listens_for_socket_clients(ws):
    argv = [sys.executable, "-m", "engine", "serve", "--stdio", "--workspace", str(ws), "--poll", "0.2"]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert b'"hello"' in proc.stdout.readline()
        c = Client(ws, start=False)
        assert c.wait_for(lambda e: e["type"] == "hello")["pid"] == proc.pid
        c.close()
    finally:
        proc.stdin.close()
        proc.wait(20)
