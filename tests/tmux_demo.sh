#!/usr/bin/env bash
# Scripted terminal session of the README's run command (`bash .ci/loratui`, i.e. `loratui --demo`)
# in tmux: the form with the demo preset appears, F5 starts the demo run, and the captured pane
# shows the loss chart and the finished run with its LoRA path.
#
#   bash tests/tmux_demo.sh [OUT_DIR]      (captures go to OUT_DIR, default /tmp/loratui-tmux)
#
# Exit status 0 only when every stage was seen on the screen. Needs tmux (apt-get install tmux).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/loratui-tmux}"
SESSION="loratui-demo-$$"
mkdir -p "$OUT"
command -v tmux >/dev/null || { echo "tmux is not installed (apt-get install -y tmux)"; exit 2; }

cleanup() { tmux kill-session -t "$SESSION" 2>/dev/null || true; }
trap cleanup EXIT

capture() { tmux capture-pane -p -t "$SESSION" > "$OUT/$1.txt"; }

# wait_for NAME PATTERN SECONDS: poll the pane until PATTERN (grep -E) shows, keep the capture as NAME.
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

# 100x32 is roomy enough for the chart; the app is also usable at 80x24.
tmux new-session -d -s "$SESSION" -x 100 -y 32 "TERM=xterm-256color bash .ci/loratui; sleep 5"

# The form with the demo preset (built on first use: the tiny model's path shows in model.base).
wait_for 1-form "demo/models/tiny-sd15" 600
tmux send-keys -t "$SESSION" F5

# The run view: progress line and the plotext chart (its y axis ticks use ┤).
wait_for 2-running "training [0-9]+/[0-9]+" 300
wait_for 3-chart "┤" 120

# The finished run shows where its LoRA is.
wait_for 4-finished "LoRA: .*\.safetensors" 900
tmux send-keys -t "$SESSION" C-q
sleep 1
echo "OK: form, run, chart and finished run captured in $OUT"
