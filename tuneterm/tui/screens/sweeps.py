"""SweepsScreen: the workspace's sweeps (``tuneterm sweep``) and the selected one's leaderboard, live.

A sweep's trials are ordinary jobs, so the app's job watcher (tuneterm.tui.job_watch) tells this
screen when something moved; a thread worker then re-reads the sweeps' state files and the screen
only draws. Each leaderboard row shows the trial's validation score with its 95% interval, its
rung, its cost and its job (``job:ID``, open it on the Jobs screen); below, the final test
comparison and its warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.markup import escape
from textual import on, work
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.keyed_table import KeyedTable

SWEEP_COLUMNS = (("id", "sweep"), ("shape", "shape"), ("model", "model"), ("data", "data"),
                 ("status", "status"), ("trials", "trials scored"), ("time", "time / budget"), ("best", "best"))


class SweepsScreen(WorkbenchScreen):
    MODE = "sweeps"
    CONTENT = "#sweep-list"
    BINDINGS = [Binding("ctrl+r", "refresh", "Refresh", id="sweeps.refresh", show=False)]

    @dataclass
    class StatesRead(Message):
        states: list = field(default_factory=list)

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, dict] = {}
        self.selected: str | None = None

    def compose_body(self):
        from tuneterm.core.sweep.leaderboard import HEADERS

        with Vertical(id="sweeps-body"):
            yield KeyedTable(SWEEP_COLUMNS, id="sweep-list")
            yield Static("no sweeps yet: run `tuneterm sweep --model REF --data DATASET --budget 15m`",
                         id="sweep-summary")
            yield KeyedTable(tuple((f"c{i}", h) for i, h in enumerate(HEADERS)), id="sweep-board")
            yield Static("", id="sweep-final")

    def on_mount(self) -> None:
        super().on_mount()
        self.watch_jobs(lambda _seen: self._read_states())
        self.after_first_paint(self._read_states)

    def action_refresh(self) -> None:
        self._read_states()

    # --- reading (a thread) ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps-read")
    def _read_states(self) -> None:
        from tuneterm.core.sweep.runner import list_states

        self.post_message(self.StatesRead(list_states()))

    # --- drawing (main thread) -------------------------------------------------------------------

    @on(StatesRead)
    def _states_read(self, event: StatesRead) -> None:
        from tuneterm.core.sweep.leaderboard import ranked

        self.states = {s["id"]: s for s in event.states}
        rows = {}
        for s in event.states:
            board = ranked(s)
            best = board[0] if board else None
            rows[s["id"]] = (s["id"], s["shape"], _short(s["model"]), _short(s["dataset"]), s.get("status", "?"),
                             f"{len(board)}/{len(s['trials'])}",
                             f"{s.get('spent_s') or 0:.0f} / {s.get('budget_s') or 0:.0f} s",
                             best["label"] if best else "–")
        table = self.query_one("#sweep-list", KeyedTable)
        table.sync(rows)
        if self.selected not in self.states:
            self.selected = table.selected_key
        self._draw(self.selected)

    @on(DataTable.RowHighlighted, "#sweep-list")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key and key != self.selected:
            self.selected = key
            self._draw(key)

    def _draw(self, sweep_id: str | None) -> None:
        from tuneterm.core.sweep.leaderboard import final_lines, rows, table_cells

        state = self.states.get(sweep_id) if sweep_id else None
        board = self.query_one("#sweep-board", KeyedTable)
        if state is None:
            board.sync({})
            self.query_one("#sweep-final", Static).update("")
            return
        board.sync({r["key"]: table_cells(r) for r in rows(state)})
        summary = (f"sweep {state['id']}: {state['shape']} data "
                   f"(train {state['counts']['train']}, val {state['counts']['val']}, test {state['counts']['test']}), "
                   f"ranked by validation {state['metric']}; {state.get('status')}")
        notes = "\n".join(f"note: {n}" for n in state.get("notes", []))
        self.query_one("#sweep-summary", Static).update(escape(summary + ("\n" + notes if notes else "")))
        self.query_one("#sweep-final", Static).update(escape("\n".join(final_lines(state))))


def _short(text: str, width: int = 32) -> str:
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]
