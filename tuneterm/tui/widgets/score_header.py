"""ScoreHeader: a Chat column's latest eval results under its title.

Per (task, metric), the first two: the value with its 95% interval and, for every column but the
first, on the next line the paired difference against the first column with its p-value (``*`` when significant;
``vs column N`` when the only report compares it with another column), from
:func:`tuneterm.core.evals.latest.latest_scores`. The screen reads the scores in a thread and hands
them over with :meth:`ScoreHeader.show`; this widget only draws.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

MAX_SCORES = 2  # a header, not a report: the Evals screen has the rest


class ScoreHeader(Static):
    DEFAULT_CSS = """
    ScoreHeader { height: auto; max-height: 5; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    ScoreHeader.-scored { color: $text; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.lines: list[str] = []

    def show(self, column_scores, running: str | None = None, eval_key: str = "ctrl+e") -> None:
        """Draw ``column_scores`` (a ColumnScores, or None before the first read); ``running`` names
        an eval job that is still working on this column."""
        lines: list[str] = []
        scores = list(getattr(column_scores, "scores", None) or [])
        for s in scores[:MAX_SCORES]:
            lines.extend(s.lines())
        if len(scores) > MAX_SCORES:
            lines.append(f"+{len(scores) - MAX_SCORES} more on the Evals screen")
        if not scores:
            lines.append("no eval results yet" + (f" · {eval_key} scores the columns" if not running else ""))
        if running:
            lines.append(f"eval job {running} running…")
        self.lines = lines
        self.set_class(bool(scores), "-scored")
        self.update(Text("\n".join(lines)))
