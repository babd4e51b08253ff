"""Each fast path of engine.train.fastpaths / readback / resident measured where it applies on a CPU.

    python bench/fastpaths_cpu.py [--steps 30] [--threads 2]

Runs `engine train` on the demo's tiny SD1.5-style model (64 px, batch 1, fp32, cached latents and
text) with each setting and prints the median s/step after the warm-up (gaps between `step` events):

- train.compile off / on with the aot_eager backend / on with inductor (per UNet block);
- train.tf32, train.fused_optimizer: CUDA only (the CPU run is the same code path: no-op);
- train.cache_on_device, train.encoders_off_device: CUDA only ("auto" holds nothing on a CPU);
- the asynchronous loss read-back: on a CPU the value is there when the step returns (no device to
  wait for), so the record is written at once: no effect to measure; on CUDA it removes one device
  synchronisation per micro-batch (run bench/gpu.py there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from train_speed import engine_step_gaps, write_images

CASES = [
    ("compile off", ""),
    ("compile aot_eager", 'compile = true\ncompile_backend = "aot_eager"'),
    ("compile inductor", 'compile = true\ncompile_backend = "inductor"'),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from engine.demo import build_tiny_sd15

    root = Path(tempfile.mkdtemp(prefix="loratui-fastpaths-"))
    model = build_tiny_sd15(root / "tiny-sd15")
    data = write_images(root / "data", 64)
    rows = []
    for name, extra in CASES:
        gaps = engine_step_gaps(root, model, data, 64, args.steps, 4, train_extra=extra)
        rows.append((name, statistics.median(gaps)))
        print(f"{name:<20} {rows[-1][1]:.4f} s/step", flush=True)
    base = rows[0][1]
    print(f"\ntiny SD1.5-style UNet, 64 px, batch 1, fp32, {args.steps} steps, {args.threads} threads")
    for name, median in rows:
        print(f"{name:<20} {median:>8.4f} s/step  x{base / median:.2f} vs off")
    print("tf32, fused_optimizer, cache_on_device, encoders_off_device, async loss read-back: CUDA only")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
