# Shared by the tmux tests (source it after setting SESSION): a tmux server of the test's own,
# `fail` printing the screen, and `wait_for TEXT [SECONDS]` polling the screen until TEXT shows up.
# A session started in someone's running server would get that server's environment, not the
# test's TUNETERM_HOME: hence `tmux -L`.

tm() { tmux -L "$SESSION" "$@"; }

fail() {
  echo "FAIL: $1" >&2
  echo "----- screen -----" >&2
  tm capture-pane -p -t "$SESSION" >&2 || true
  exit 1
}

wait_for() {
  local text="$1" limit="${2:-60}" i=0
  while [ "$i" -lt $((limit * 10)) ]; do
    if tm capture-pane -p -t "$SESSION" | grep -qF -- "$text"; then
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  fail "did not see '$text' within ${limit}s"
}
