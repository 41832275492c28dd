"""LogTail: the last lines of a job's log.txt, replaced as a whole on each poll."""

from __future__ import annotations

from textual.widgets import RichLog


class LogTail(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=False, markup=False, highlight=False, auto_scroll=True, **kwargs)
        self.lines_shown: list[str] = []

    def show(self, lines: list[str]) -> None:
        if lines == self.lines_shown:
            return
        self.lines_shown = list(lines)
        self.clear()
        for line in lines:
            self.write(line.rstrip("\n"))
