"""TokenHistogram: how long the examples are in the model's tokens, against a cutoff."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class TokenHistogram(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lengths: list[int] = []
        self.cutoff: int | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_lengths(self, lengths: list[int], cutoff: int | None) -> None:
        self.lengths, self.cutoff = list(lengths), cutoff
        self._draw()

    @property
    def n_over(self) -> int:
        return sum(1 for n in self.lengths if self.cutoff and n > self.cutoff)

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if not self.lengths:
            plt.title("token lengths (not measured yet)")
            self.refresh()
            return
        plt.hist(self.lengths, bins=min(40, max(5, len(set(self.lengths)))), label="examples")
        if self.cutoff:
            plt.vline(self.cutoff, "red")
        plt.title(f"tokens per example · cutoff {self.cutoff or '-'} · {self.n_over} over")
        plt.xlabel("tokens")
        self.refresh()
