"""Soak benchmark: the real TUI left open while runs flow through the queue.

    .venv/bin/python bench/tui_soak.py [--minutes 30] [--rate 100] [--steps 2000]

Drives the real LoratuiApp headless (Textual's pilot, 80x24) on the run view while a thread plays a
fast daemon: `queue` snapshots, run_started / step / validation / log / run_finished of run after run
(`--steps` steps each at `--rate` steps/s), queue changes between runs. Every few seconds it presses a
key (`l`, the loss/LR toggle) and times press-to-redrawn-chart. Prints:

- key latency (median, p90) in the first and in the last minute, and their ratio;
- CPU while idle (events stopped, 10 s) at the start and at the end, in % of one core;
- memory (RSS) at the start and at the end;
- the Footer's watcher count at the start and the end (Textual's data_bind leak: it must stay flat).

Targets (issue): after 30 minutes, last-minute latency within 1.5x of the first minute's, idle CPU
under 3 %, memory growth bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import protocol  # noqa: E402
from tui.app import LoratuiApp  # noqa: E402
from tui.messages import EngineEvent  # noqa: E402
from tui.widgets.footer import WATCHERS_ATTR, Footer  # noqa: E402
from tui.widgets.loss_chart import LossChart  # noqa: E402


class FakeDaemon(threading.Thread):
    """Posts what a daemon would send, as fast as asked, until `stop`."""

    def __init__(self, app: LoratuiApp, rate: float, steps: int) -> None:
        super().__init__(daemon=True)
        self.app, self.rate, self.steps = app, rate, steps
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.runs = 0
        self.events = 0

    def post(self, event: dict) -> None:
        event.setdefault("time", round(time.time(), 3))
        self.app.post_message(EngineEvent(event))
        self.events += 1

    def queue(self, current: int, status: str) -> None:
        entries = []
        for i in range(max(1, current - 3), current + 4):  # a few done, the running one, pending
            st = "done" if i < current else status if i == current else "pending"
            entries.append(
                {"run": f"r{i}", "name": f"soak-{i}", "status": st, "position": i, "progress": 0.0}
            )
        self.post(protocol.queue(entries))

    def run(self) -> None:
        self.post(protocol.hello(engine_version="soak", workspace=".", device="cpu") | {"running": []})
        delay = 1.0 / self.rate
        while not self.stopped.is_set():
            self.runs += 1
            rid = f"r{self.runs}"
            self.queue(self.runs, "running")
            self.post(
                protocol.run_started(
                    run=rid, name=f"soak-{self.runs}", config="", total_steps=self.steps, run_dir=""
                )
            )
            for step in range(1, self.steps + 1):
                while self.paused.is_set() and not self.stopped.is_set():
                    time.sleep(0.05)
                if self.stopped.is_set():
                    return
                loss = 0.1 + 1.0 / step
                self.post(
                    protocol.step(
                        run=rid,
                        step=step,
                        total_steps=self.steps,
                        epoch=step // 100,
                        loss=loss,
                        loss_ema=loss,
                        lr=1e-4,
                        seconds_per_step=delay,
                        eta_seconds=(self.steps - step) * delay,
                        samples_per_second=4 / delay,
                    )
                )
                if step % 100 == 0:
                    self.post(protocol.validation(run=rid, step=step, val_loss=loss * 1.1))
                    self.post(protocol.log(f"checkpoint at step {step}", run=rid))
                time.sleep(delay)
            self.post(
                protocol.run_finished(run=rid, status="done", lora=f"/tmp/soak-{self.runs}.safetensors")
            )
            self.queue(self.runs, "done")


def watcher_count(app: LoratuiApp) -> int:
    total = 0
    for footer in app.screen.query(Footer):
        total += sum(len(v) for v in getattr(footer, WATCHERS_ATTR, {}).values())
    return total


async def key_latency(app: LoratuiApp) -> float:
    """From the key event (as a terminal would deliver it) to the chart rebuilt for it. Not
    pilot.press: that also waits for the app to go idle, which a flowing run never does."""
    chart = app.run_screen.query_one(LossChart)
    before, redraws = chart.title, chart.redraws
    t0 = time.perf_counter()
    app.simulate_key("l")
    while chart.title == before or chart.redraws == redraws:
        await asyncio.sleep(0.001)
    return time.perf_counter() - t0


async def idle_cpu(source: FakeDaemon, seconds: float = 10.0) -> float:
    source.paused.set()
    await asyncio.sleep(3.0)  # let the queued events drain
    proc = psutil.Process()
    c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    await asyncio.sleep(seconds)
    c1, t1 = sum(proc.cpu_times()[:2]), time.perf_counter()
    source.paused.clear()
    return 100.0 * (c1 - c0) / (t1 - t0)


async def soak(minutes: float, rate: float, steps: int, workspace: Path) -> None:
    app = LoratuiApp(workspace, attach=False)
    async with app.run_test(size=(80, 24), headless=True) as pilot:
        app.show_run()
        await pilot.pause(0.5)
        source = FakeDaemon(app, rate, steps)
        source.start()
        await asyncio.sleep(3.0)
        rss0 = psutil.Process().memory_info().rss
        watchers0 = watcher_count(app)
        cpu0 = await idle_cpu(source)
        start = time.perf_counter()
        end = start + minutes * 60
        samples: list[tuple[float, float]] = []
        while time.perf_counter() < end:
            samples.append((time.perf_counter() - start, await key_latency(app)))
            await asyncio.sleep(2.0)
        cpu1 = await idle_cpu(source)
        rss1 = psutil.Process().memory_info().rss
        watchers1 = watcher_count(app)
        source.stopped.set()
    first = [s for t, s in samples if t < 60] or [samples[0][1]]
    last = [s for t, s in samples if t >= minutes * 60 - 60] or [samples[-1][1]]

    def describe(xs: list[float]) -> str:
        xs = sorted(xs)
        return (
            f"median {statistics.median(xs) * 1000:.0f} ms, p90 {xs[int(0.9 * (len(xs) - 1))] * 1000:.0f} ms"
        )

    print(f"soak: {minutes:g} min, {source.runs} runs, {source.events} events ({rate:g} steps/s)")
    print(f"key latency, first minute: {describe(first)} ({len(first)} presses)")
    print(f"key latency, last minute:  {describe(last)} ({len(last)} presses)")
    print(
        f"last/first median ratio: {statistics.median(last) / statistics.median(first):.2f} (target <= 1.5)"
    )
    print(f"idle CPU: start {cpu0:.1f} %, end {cpu1:.1f} % of one core (target < 3 %)")
    print(f"memory (RSS): start {rss0 / 2**20:.0f} MiB, end {rss1 / 2**20:.0f} MiB")
    print(f"footer watchers: start {watchers0}, end {watchers1}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="steps per second")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(soak(args.minutes, args.rate, args.steps, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
