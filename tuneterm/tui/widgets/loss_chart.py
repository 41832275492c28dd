"""LossChart: training and eval loss against the step, drawn with plotext."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossChart(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train: list[tuple[float, float]] = []
        self.evals: list[tuple[float, float]] = []

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_series(self, train: list[tuple[float, float]], evals: list[tuple[float, float]]) -> None:
        self.train, self.evals = train, evals
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss" if self.train or self.evals else "loss (no steps yet)")
        plt.xlabel("step")
        if self.train:
            plt.plot([x for x, _ in self.train], [y for _, y in self.train], label="train", marker="braille")
        if self.evals:
            plt.plot([x for x, _ in self.evals], [y for _, y in self.evals], label="eval", marker="dot")
        self.refresh()
