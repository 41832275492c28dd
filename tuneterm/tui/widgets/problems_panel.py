"""ProblemsPanel: a dataset's validation report, one problem a row; enter on a row posts
:class:`ProblemsPanel.ProblemChosen` (the screen jumps to the line and shows the rule's hint)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.containers import Vertical
from textual.lazy import Lazy
from textual.message import Message
from textual.widgets import DataTable, Static

COLUMNS = ("line", "sev", "kind", "message")


class ProblemsPanel(Vertical):
    @dataclass
    class ProblemChosen(Message):
        problem: object  # tuneterm.core.datasets.validate.Problem

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report = None

    def compose(self):
        yield Static("not validated yet (v)", id="problems-head")
        # The table is built after the first paint: this tab is not the one shown first.
        yield Lazy(DataTable(id="problems", cursor_type="row", zebra_stripes=True))

    def _table(self) -> DataTable | None:
        found = self.query("#problems")
        if not found:
            return None
        table = found.first(DataTable)
        if not table.columns:
            for label in COLUMNS:
                table.add_column(label, key=label)
        return table

    def on_mount(self) -> None:
        report = getattr(self.screen, "report", None)  # validated before this panel was built
        if report is not None and self.report is None:
            self.show_report(report)
        self.call_after_refresh(self._fill)  # the lazy table exists from the next refresh

    def validating(self) -> None:
        self.report = None
        head = self.query_one("#problems-head", Static)
        head.update("validating…")
        head.set_classes("")
        if (table := self._table()) is not None:
            table.clear()

    def show_report(self, report) -> None:
        self.report = r = report
        head = self.query_one("#problems-head", Static)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "no problems"
        head.update(f"[b]{r.status}[/b] · {r.n_valid}/{r.n_examples} valid · {r.n_errors} errors, "
                    f"{r.n_warnings} warnings · {counts}" + (" (first ones kept)" if r.truncated else ""))
        head.set_classes(f"status-{r.status}")
        self._fill()

    def _fill(self) -> None:
        table = self._table()
        if table is None or self.report is None:
            return
        table.clear()
        for i, p in enumerate(self.report.problems):
            table.add_row("-" if p.line is None else str(p.line), p.severity[:4], p.kind, p.message, key=str(i))

    @on(DataTable.RowSelected, "#problems")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.report is not None and event.row_key is not None:
            self.post_message(self.ProblemChosen(self.report.problems[int(event.row_key.value)]))
