"""EvalReport: an eval report as two tables: the variants (metrics with 95% intervals, the
paired comparison with its baseline, speed) and the items, by default only those where the
variants disagree. It draws what the screen's worker read; it reads no file itself."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

VARIANT_COLUMNS = ("variant", "metrics (95% CI)", "Δ vs baseline (paired)", "n", "task", "speed")
ORDER = (1, 3, 4, 2, 0, 5)  # from tuneterm.core.evals.report.rows: what matters first on 80 columns
WIDTHS = (28, 44, 48, 4, 14, 40)


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class EvalReport(Vertical):
    """Holds the loaded report; ``only_disagree`` filters the item table."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report: dict | None = None
        self.rows: list = []  # tuneterm.core.evals.views.ItemRow
        self.variant_rows: list[list[str]] = []
        self.warnings: list[str] = []
        self.only_disagree = True
        self.shown_items: list = []

    def compose(self) -> ComposeResult:
        yield Static("no report: launch an eval (^l) or pick a finished eval job", id="eval-report-head")
        yield DataTable(id="eval-variants", cursor_type="row", zebra_stripes=True)
        yield Static("", id="eval-items-head")
        yield DataTable(id="eval-items", cursor_type="row", zebra_stripes=True)
        yield Static("", id="eval-item-detail", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#eval-variants", DataTable).add_columns(*VARIANT_COLUMNS)

    def clear(self, text: str) -> None:
        self.report, self.rows, self.variant_rows, self.shown_items = None, [], [], []
        self.query_one("#eval-report-head", Static).update(text)
        self.query_one("#eval-variants", DataTable).clear()
        items = self.query_one("#eval-items", DataTable)
        items.clear(columns=True)
        self.query_one("#eval-items-head", Static).update("")
        self.query_one("#eval-item-detail", Static).update("")

    def show(self, title: str, report: dict, variant_rows: list[list[str]], warnings: list[str], rows: list) -> None:
        self.report, self.variant_rows, self.warnings, self.rows = report, variant_rows, warnings, rows
        head = f"[b]{_escape(title)}[/b] · {report.get('created_at', '')} · {report.get('duration_s', '?')} s"
        if warnings:
            head += "\n[yellow]" + "\n".join(_escape(w) for w in warnings[:3]) + "[/yellow]"
        self.query_one("#eval-report-head", Static).update(head)
        table = self.query_one("#eval-variants", DataTable)
        table.clear()
        # report.json's keys are sorted; show the variants in the order they were given
        rank = {v["id"]: k for k, v in enumerate(report.get("variants", []))}
        for r in sorted(variant_rows, key=lambda r: (r[0], rank.get(r[1], len(rank)))):
            table.add_row(*(_clip(r[i], w) for i, w in zip(ORDER, WIDTHS)))
        self._draw_items()

    def set_filter(self, only_disagree: bool) -> None:
        self.only_disagree = only_disagree
        if self.report is not None:
            self._draw_items()

    def _draw_items(self) -> None:
        variants = [v["id"] for v in (self.report or {}).get("variants", [])]
        self.shown_items = [r for r in self.rows if r.disagree] if self.only_disagree else list(self.rows)
        table = self.query_one("#eval-items", DataTable)
        table.clear(columns=True)
        # Text, not markup: a variant id such as fewshot:4:POOL@REF or [..] is shown as written
        table.add_columns("task", "item", "target", *(Text(_clip(v, 24) or "?") for v in variants))
        for r in self.shown_items:
            cells = []
            for v in variants:
                score = r.scores.get(v)
                mark = "" if score is None else (" ✓" if score >= 1 else " ✗" if score <= 0 else f" {score:.2f}")
                cells.append(_clip(r.answers.get(v, "–"), 20) + mark)
            table.add_row(r.task, _clip(r.item, 14), _clip(r.target, 20), *cells)
        which = "where the variants disagree" if self.only_disagree else "all"
        n_dis = sum(1 for r in self.rows if r.disagree)
        self.query_one("#eval-items-head", Static).update(
            f"items ({which}): {len(self.shown_items)} shown, {n_dis} of {len(self.rows)} disagree · ^f toggles")
        self.query_one("#eval-item-detail", Static).update("")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "eval-items":
            return
        event.stop()
        row = event.cursor_row
        if not 0 <= row < len(self.shown_items):
            return
        item = self.shown_items[row]
        lines = [f"[b]{_escape(item.task)} / {_escape(item.item)}[/b]  target: {_escape(_clip(item.target, 80))}"]
        for v, out in item.outputs.items():
            lines.append(f"{_escape(_clip(v, 40))}: {_escape(_clip(out, 100))}")
        self.query_one("#eval-item-detail", Static).update("\n".join(lines))


def _escape(text: str) -> str:
    return str(text).replace("[", r"\[")
