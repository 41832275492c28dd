#!/usr/bin/env bash
# A blind round in the real workbench at 80x24: tmux runs `tuneterm tui --screen chat`, send-keys
# types, capture-pane reads. Two columns stream from tests/fake_chat.py (a scripted OpenAI-compatible
# server on 127.0.0.1); blind mode hides their names, a vote is stored and the names are revealed;
# the Evals screen shows the win-rate table.
#
#   tests/tmux_blind.sh [PYTHON]      (exit 0 = every check passed; needs tmux)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d)"
SESSION="tuneterm-blind-$$"
export TUNETERM_HOME="$WORK/ws" TUNETERM_CONFIG="$WORK/config.toml" HF_HUB_OFFLINE=1 TUNETERM_OFFLINE=1
export TERM=xterm-256color
FAKE_PID=""

# shellcheck source=tests/tmux_lib.sh
source "$REPO/tests/tmux_lib.sh"

cleanup() {
  tm kill-server 2>/dev/null || true
  [ -z "$FAKE_PID" ] || kill "$FAKE_PID" 2>/dev/null || true
  [ -n "${TMUX_SMOKE_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" "$REPO/tests/fake_chat.py" "$WORK/port" &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || fail "the fake chat server did not start"
BASE="http://127.0.0.1:$(cat "$WORK/port")/v1"

tm new-session -d -s "$SESSION" -x 80 -y 24 "cd '$REPO' && '$PY' -m tuneterm tui --screen chat"
wait_for "smollm2-135m-instruct" 30
# column 1 becomes the "good" model, a second column the "weak" one
tm send-keys -t "$SESSION" C-r
wait_for "New model for column 1"
sleep 0.5  # the modal's input takes the focus after it is drawn
tm send-keys -t "$SESSION" End C-u
tm send-keys -t "$SESSION" -l "$BASE#good"
tm send-keys -t "$SESSION" Enter
wait_for "good @"
tm send-keys -t "$SESSION" C-o
wait_for "Model for the new column"
sleep 0.5
tm send-keys -t "$SESSION" -l "$BASE#weak"
tm send-keys -t "$SESSION" Enter
wait_for "weak @"

tm send-keys -t "$SESSION" C-b
wait_for "Model 2"
tm capture-pane -p -t "$SESSION" | grep -qF "good @" && fail "blind mode still shows a model name"
tm send-keys -t "$SESSION" "i"
sleep 0.3
tm send-keys -t "$SESSION" -l "What is the capital of France?"
tm send-keys -t "$SESSION" Enter
wait_for "which is better?"
wait_for "Paris"
tm capture-pane -p -t "$SESSION" | grep -qF "good @" && fail "a model name shows before the vote"
tm send-keys -t "$SESSION" "1"
wait_for "vote stored"

"$PY" - "$WORK/expect" <<'PYEOF'
import sys
from tuneterm.core import votes
[v] = votes.list_votes()
assert v.outcome == "1" and v.voter == "human", v
assert sorted(r.rsplit("#", 1)[1] for r in v.variants) == ["good", "weak"], v.variants
assert v.prompt == "What is the capital of France?"
print("vote:", v.outcome, v.winner)
# the table's row is the pair (good, weak): "1-0" when the shuffle put good in column 1, else "0-1"
open(sys.argv[1], "w").write("1-0" if v.winner.endswith("#good") else "0-1")
PYEOF

# the win-rate table on the Evals screen (the vote left the focus off the prompt: 6 switches screens)
tm send-keys -t "$SESSION" "6"
wait_for "^l Launch"
tm send-keys -t "$SESSION" C-y
wait_for "win rates"
wait_for "too few votes"
wait_for "$(cat "$WORK/expect")"

tm send-keys -t "$SESSION" C-q
i=0
while tm has-session -t "$SESSION" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
  [ "$i" -lt 100 ] || fail "ctrl+q did not quit"
done
echo "tmux blind: ok"
