#!/usr/bin/env bash
# Scripted 80x24 terminal tour of "leave it going -> come back -> keep control" in a real tmux:
# a TUI starts the demo run and quits with "Leave it going"; a second TUI (same pane) attaches to
# the workspace daemon, shows the running entry and its chart, stops it with x; no error toast.
#
#   bash tests/tmux_reattach.sh [OUT_DIR]     (captures go to OUT_DIR, default /tmp/loratui-reattach)
#
# Exit status 0 only when every stage was seen on the screen. Needs tmux. PYTHON overrides the
# interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
OUT="${1:-/tmp/loratui-reattach}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
SESSION="loratui-reattach-$$"
WS="$(mktemp -d /tmp/loratui-reattach-ws.XXXXXX)"
mkdir -p "$OUT"
command -v tmux >/dev/null || { echo "tmux is not installed (apt-get install -y tmux)"; exit 2; }

cleanup() {
  tmux kill-session -t "$SESSION" 2>/dev/null || true
  # The daemon would idle out on its own (LORATUI_SERVE_IDLE_S below); end it now.
  local pid
  pid="$(PYTHONPATH="$REPO" "$PY" -c "import sys; from engine.runqueue import owner_pid; print(owner_pid(sys.argv[1]) or '')" "$WS/queue" 2>/dev/null || true)"
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; sleep 2; fi
  rm -rf "$WS"
}
trap cleanup EXIT

capture() { tmux capture-pane -p -t "$SESSION" > "$OUT/$1.txt"; }

wait_for() {  # wait_for NAME PATTERN SECONDS
  local name="$1" pattern="$2" limit="$3" waited=0
  while (( waited < limit * 2 )); do
    capture "$name"
    if grep -Eq "$pattern" "$OUT/$name.txt"; then
      echo "== $name (after ~$((waited / 2)) s)"; cat "$OUT/$name.txt"; return 0
    fi
    sleep 0.5; waited=$((waited + 1))
  done
  echo "FAILED: '$pattern' not on screen after $limit s; last capture:"; cat "$OUT/$name.txt"; exit 1
}

no_error_toast() {  # the re-attached TUI must not greet the user with an error
  if grep -Eq "already owned|Engine refused|Engine error|exited with code|went away" "$OUT/$1.txt"; then
    echo "FAILED: an error toast in $1"; exit 1
  fi
}

# The demo workspace, and a long run of it (the demo's 60 steps could end before we come back).
PYTHONPATH="$REPO" "$PY" -m engine demo --workspace "$WS" >/dev/null
mkdir -p "$WS/presets"
sed -e 's/^name = .*/name = "long"/' -e 's/^steps = .*/steps = 5000/' presets/demo.toml > "$WS/presets/long.toml"

TUI="env TERM=xterm-256color PYTHONPATH=$REPO LORATUI_SERVE_IDLE_S=20 $PY -m tui.cli --workspace $WS"
tmux new-session -d -s "$SESSION" -x 80 -y 24 "$TUI --preset long; $TUI; sleep 5"

wait_for 1-form "long" 120
sleep 1
tmux send-keys -t "$SESSION" F5
wait_for 2-training "training [0-9]+/5000" 300
tmux send-keys -t "$SESSION" C-q
wait_for 3-quit-dialog "Leave it going" 30
tmux send-keys -t "$SESSION" Enter

# The second TUI attaches: the run view with the running entry, its steps and chart.
wait_for 4-reattached "training [0-9]+/5000" 120
wait_for 5-queue "running" 30
wait_for 6-chart "┤" 60
no_error_toast 4-reattached
no_error_toast 6-chart
tmux send-keys -t "$SESSION" x
wait_for 7-stopped "stopped" 120
no_error_toast 7-stopped
tmux send-keys -t "$SESSION" C-q
sleep 1
echo "OK: leave it going, re-attach, stop with x, captured in $OUT"
