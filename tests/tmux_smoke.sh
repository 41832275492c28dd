#!/usr/bin/env bash
# Drive the real workbench in a real terminal: tmux runs `tuneterm`, send-keys types, capture-pane reads.
#
#   tests/tmux_smoke.sh [PYTHON]      (exit 0 = every check passed; needs tmux)
#
# It uses a throw-away workspace with the tickets sample imported, runs in an 80x24 terminal (the
# smallest the workbench supports), visits each screen by its number or function key, checks
# that each footer's key labels and the Quantize screen's form and Reports tab are on screen,
# opens the command palette, and quits with q. Set TMUX_SMOKE_KEEP=1 to keep the work folder;
# the screen is printed on failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d)"
SESSION="tuneterm-smoke-$$"
export TUNETERM_HOME="$WORK/ws" TUNETERM_CONFIG="$WORK/config.toml" HF_HUB_OFFLINE=1 TUNETERM_OFFLINE=1
export TERM=xterm-256color

# shellcheck source=tests/tmux_lib.sh
source "$REPO/tests/tmux_lib.sh"

cleanup() {
  tm kill-server 2>/dev/null || true
  [ -n "${TMUX_SMOKE_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" - "$REPO" <<'PYEOF'
import sys
from pathlib import Path
from tuneterm.core.datasets import store
store.import_dataset(Path(sys.argv[1]) / "sample_data" / "tickets", name="tickets")
PYEOF

tm new-session -d -s "$SESSION" -x 80 -y 24 "cd '$REPO' && '$PY' -m tuneterm"
wait_for "1 Datasets" 30
wait_for "tickets"
wait_for "example 1/"
wait_for "assistant"
wait_for "s Split"   # the footer's last screen key fits in 80 columns
wait_for "^p palette"

tm send-keys -t "$SESSION" "]"
wait_for "example 2/"

tm send-keys -t "$SESSION" "e"
wait_for "valid"

tm send-keys -t "$SESSION" "4"
wait_for "no jobs yet"
wait_for "o Artifact"

tm send-keys -t "$SESSION" "3"
wait_for "recipes/lora.toml"
wait_for "LoRA tolerates"
wait_for "^r Reset recipe"

tm send-keys -t "$SESSION" F2
wait_for "─ provider ─"
wait_for "prices as of" 30
wait_for "few-shot K"  # the savings form is not pushed off an 80x24 screen
wait_for "^o Model"

tm send-keys -t "$SESSION" F5
wait_for "recipes/int8-dynamic.toml"
wait_for "smooth_alpha"
wait_for "^o Reports"
# another method: its own recipe (the tabs have focus on arrival; the model field is one tab
# away, the method select two)
tm send-keys -t "$SESSION" Tab Tab Enter
wait_for "bnb-nf4"
tm send-keys -t "$SESSION" Down Down Down Enter
wait_for "recipes/bnb-nf4.toml"
wait_for "double_quant"
tm send-keys -t "$SESSION" C-o
wait_for "no quantize jobs yet"
tm send-keys -t "$SESSION" C-b
wait_for "more settings"

tm send-keys -t "$SESSION" C-p
wait_for "Search for commands"
# type a filter: on a 30-row terminal the unfiltered list may not reach the screen commands
tm send-keys -t "$SESSION" -l "jobs"
wait_for "Go to Jobs"
tm send-keys -t "$SESSION" Escape
sleep 0.5  # a key right after Escape would read as Alt+key

tm send-keys -t "$SESSION" "1"
wait_for "0 errors"
tm send-keys -t "$SESSION" "p"
wait_for "example 2/"
tm send-keys -t "$SESSION" "q"
i=0
while tm has-session -t "$SESSION" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
  [ "$i" -lt 100 ] || fail "q did not quit"
done
echo "tmux smoke: ok"
