"""Benchmark: the dataset browser on 1,000 images, and a samples grid of 200 thumbnails.

    .venv/bin/python bench/browser_speed.py [--images 1000] [--samples 200]

Builds a dataset of N small PNGs (96x128 .. 160x96, random colours) with caption files in a temp
folder, then, in a headless Textual app (half-block renderer, 120x40):

- open: from pushing the browser until the scan is done and every row is in the table;
- scroll: the cursor moved down through every row as a held key does (the picture loads when the
  cursor rests), until the last image's picture is on screen; then 50 images one at a time, each
  picture drawn before the next key;
- grid: a run folder with `--samples` sample PNGs (10 prompts x N/10 steps): from pushing the
  samples screen until every cell's picture is decoded, then scrolling to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402
from textual.app import App  # noqa: E402

from engine.config import load_config_text  # noqa: E402
from tui import thumbs  # noqa: E402
from tui.screens.browser import BrowserScreen  # noqa: E402
from tui.screens.samples import SamplesScreen  # noqa: E402
from tui.widgets.picture import Picture  # noqa: E402

TAGS = ["red", "blue", "circle", "square", "night", "day", "outdoors", "portrait", "smile", "hat"]


def make_dataset(root: Path, n: int) -> Path:
    rnd = random.Random(0)
    folder = root / "data" / "3_things"
    folder.mkdir(parents=True)
    for i in range(n):
        size = rnd.choice([(96, 128), (128, 128), (160, 96)])
        Image.new("RGB", size, tuple(rnd.randrange(256) for _ in range(3))).save(folder / f"img{i:04d}.png")
        tags = rnd.sample(TAGS, 4)
        (folder / f"img{i:04d}.txt").write_text(", ".join(tags) + "\n", encoding="utf-8")
    return root / "data"


def make_samples(root: Path, n: int) -> Path:
    run = root / "runs" / "bench"
    (run / "samples").mkdir(parents=True)
    rnd = random.Random(1)
    for k in range(n):
        index, step = k % 10, (k // 10 + 1) * 100
        Image.new("RGB", (512, 512), tuple(rnd.randrange(256) for _ in range(3))).save(
            run / "samples" / f"bench-step{step:06d}-{index:02d}.png"
        )
    return run


async def wait(pilot, predicate, limit=600.0):
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > limit:
            raise TimeoutError
        await pilot.pause(0.01)


async def bench(n_images: int, n_samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_dataset(root, n_images)
        run = make_samples(root, n_samples)
        cfg = load_config_text(
            f'name = "b"\n[model]\nbase = "m"\n[dataset]\ndirs = ["{data}"]\nresolution = 128\n'
            'trigger_word = "thing"\nmin_bucket = 64\nbucket_step = 32\n',
            workspace=root,
        )
        app = App()
        async with app.run_test(size=(120, 40)) as pilot:
            t0 = time.perf_counter()
            screen = BrowserScreen(cfg)
            app.push_screen(screen)
            await wait(pilot, lambda: screen.view is not None and len(screen.shown) == n_images)
            opened = time.perf_counter() - t0
            table = screen.query_one("#browser-images")
            picture = screen.query_one(Picture)
            # Holding the down key: one cursor move per message cycle, the picture of the row the
            # cursor rests on at the end.
            t0 = time.perf_counter()
            for row in range(1, n_images):
                table.move_cursor(row=row)
                await pilot.pause()
            last = screen.shown[-1].path
            await wait(pilot, lambda: picture.shown_path == str(last))
            scrolled = time.perf_counter() - t0
            # Looking at each image: a key press, then wait until its picture is drawn.
            looked = min(50, n_images - 1)
            t0 = time.perf_counter()
            for _ in range(looked):
                await pilot.press("up")
                current = screen.current.path
                await wait(pilot, lambda current=current: picture.shown_path == str(current))
            stepped = time.perf_counter() - t0
            print(f"browser: {n_images} images opened in {opened:.2f} s (scan + table)")
            print(
                f"browser: cursor through all {n_images} rows in {scrolled:.2f} s "
                f"({1000 * scrolled / n_images:.1f} ms per row), last picture included"
            )
            print(
                f"browser: one image at a time, picture drawn each time: "
                f"{1000 * stepped / looked:.0f} ms per image ({looked} images)"
            )
            app.pop_screen()
            thumbs.clear()
            t0 = time.perf_counter()
            grid = SamplesScreen(run)
            app.push_screen(grid)
            await wait(pilot, lambda: len(grid.cells) == n_samples)
            built = time.perf_counter() - t0
            await wait(pilot, lambda: all(c.query_one(Picture).shown_path for c in grid.cells))
            decoded = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(len(grid.grid.indices)):
                await pilot.press("down")
            for _ in range(len(grid.grid.steps)):
                await pilot.press("left")
            walked = time.perf_counter() - t0
            print(f"samples grid: {n_samples} cells built in {built:.2f} s, all pictures in {decoded:.2f} s")
            print(f"samples grid: walked every row and column in {walked:.2f} s; {thumbs.stats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(bench(args.images, args.samples))


if __name__ == "__main__":
    main()
