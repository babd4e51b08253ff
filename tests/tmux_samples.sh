#!/usr/bin/env bash
# A real terminal (tmux) showing sample images in half-blocks: a workspace with a finished run and
# its samples (2 prompts x 3 steps, solid red and blue PNGs), loratui opened on it with
# --images=halfblock, F10 (history), then `i` (the highlighted run's samples grid) and enter (one
# sample large). The captures (plain, and with colours: *.ansi) show the ▀ cells of the pictures.
#
#   bash tests/tmux_samples.sh [OUT_DIR]      (captures go to OUT_DIR, default /tmp/loratui-tmux-samples)
#
# Exit status 0 only when every stage was seen on the screen. Needs tmux (apt-get install tmux).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/loratui-tmux-samples}"
SESSION="loratui-samples-$$"
WS="$(mktemp -d /tmp/loratui-samples-ws.XXXXXX)"
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
mkdir -p "$OUT"
command -v tmux >/dev/null || { echo "tmux is not installed (apt-get install -y tmux)"; exit 2; }

cleanup() { tmux kill-session -t "$SESSION" 2>/dev/null || true; rm -rf "$WS"; }
trap cleanup EXIT

PYTHONPATH="$PWD" "$PY" - "$WS" <<'PYEOF'
import json, sys
from pathlib import Path
from PIL import Image
from tests.logs_util import make_run

run = make_run(Path(sys.argv[1]), "demo", steps=150)
(run / "samples").mkdir()
for step in (50, 100, 150):
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (64, 64), colour).save(run / "samples" / f"demo-step{step:06d}-{i:02d}.png")
(run / "samples" / "prompts.json").write_text(json.dumps([{"index": 0, "prompt": "red circle"}, {"index": 1, "prompt": "blue square"}]))
PYEOF

capture() {
  tmux capture-pane -p -t "$SESSION" > "$OUT/$1.txt"
  tmux capture-pane -p -e -t "$SESSION" > "$OUT/$1.ansi"
}

wait_for() {
  local name="$1" pattern="$2" limit="$3" waited=0
  while (( waited < limit * 2 )); do
    capture "$name"
    if grep -Eq "$pattern" "$OUT/$name.txt"; then
      echo "== $name (after ~$((waited / 2)) s)"
      cat "$OUT/$name.txt"
      return 0
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "FAILED: '$pattern' not on screen after $limit s; last capture:"
  cat "$OUT/$name.txt"
  exit 1
}

tmux new-session -d -s "$SESSION" -x 120 -y 36 \
  "TERM=xterm-256color PYTHONPATH=$PWD $PY -m tui.cli --workspace $WS --engine train --images halfblock; sleep 5"

wait_for 1-form "Preset|preset" 120
tmux send-keys -t "$SESSION" F10
wait_for 2-history "demo" 60
tmux send-keys -t "$SESSION" i
wait_for 3-grid "2 prompts × 3 steps" 60
wait_for 4-pictures "▀▀▀▀▀▀▀▀" 60
# The colours of the cells are the samples' own (red row, blue row).
grep -Eq "38;(2;255;0;0|5;196)" "$OUT/4-pictures.ansi" || { echo "FAILED: no red half-blocks"; exit 1; }
grep -Eq "38;(2;0;0;255|5;21)" "$OUT/4-pictures.ansi" || { echo "FAILED: no blue half-blocks"; exit 1; }
tmux send-keys -t "$SESSION" Enter
wait_for 5-large "step 150 · red circle" 60
tmux send-keys -t "$SESSION" Escape Escape Escape C-q
sleep 1
echo "OK: the samples grid and one sample large, in half-blocks, captured in $OUT"
