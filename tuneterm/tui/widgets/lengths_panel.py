"""LengthsPanel: tokens per example with a model's template, as a histogram against a cutoff.

The histogram (plotext) is imported and mounted the first time the panel is shown; changing
the cutoff redraws without measuring again.
"""

from __future__ import annotations

from textual import on
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static

DEFAULT_CUTOFF = 512


class LengthsPanel(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cutoff = DEFAULT_CUTOFF
        self.lengths: list[list[int]] = []  # [line, tokens]
        self.model = ""
        self.limit: int | None = None

    def compose(self):
        with Horizontal(classes="form-row"):
            cutoff = Input(str(DEFAULT_CUTOFF), id="cutoff", type="integer")
            cutoff.border_title = "cutoff (tokens)"
            yield cutoff
            yield Static("", id="lengths-head")
        yield Vertical(id="histogram-slot")

    def histogram(self):
        from tuneterm.tui.widgets.token_histogram import TokenHistogram  # plotext, on first use

        found = self.query(TokenHistogram)
        if found:
            return found.first()
        hist = TokenHistogram(id="histogram")
        self.query_one("#histogram-slot", Vertical).mount(hist)
        return hist

    def clear(self) -> None:
        self.lengths, self.limit = [], None
        self.query_one("#lengths-head", Static).update("")
        if self.query("#histogram"):
            self.histogram().set_lengths([], self.cutoff)

    def measuring(self, model: str) -> None:
        self.query_one("#lengths-head", Static).update(f"measuring with {model}'s tokenizer…")

    def show(self, lengths: list[list[int]], model: str, limit: int | None) -> None:
        self.lengths, self.model, self.limit = lengths, model, limit
        self._draw()

    def _draw(self) -> None:
        values = [n for _, n in self.lengths]
        hist = self.histogram()
        hist.set_lengths(values, self.cutoff)
        if not values:
            return
        longest = max(self.lengths, key=lambda ln: ln[1])
        text = (f"{len(values)} examples · {self.model} · mean {sum(values) / len(values):.0f}, "
                f"max {longest[1]} (line {longest[0]}) · [b]{hist.n_over} over {self.cutoff}[/b]"
                + (" (truncated in training)" if hist.n_over else ""))
        if self.limit:
            text += f" · model limit {self.limit}"
        self.query_one("#lengths-head", Static).update(text)

    @on(Input.Changed, "#cutoff")
    def _cutoff(self, event: Input.Changed) -> None:
        event.stop()
        if event.value.isdigit() and int(event.value) > 0:
            self.cutoff = int(event.value)
            if self.lengths:
                self._draw()
