"""EvalsScreen: until the eval issue lands in the TUI, it points at the command."""

from __future__ import annotations

from tuneterm.tui.navigation import BY_MODE
from tuneterm.tui.screens.placeholder import PlaceholderScreen


class EvalsScreen(PlaceholderScreen):
    def __init__(self) -> None:
        super().__init__(
            BY_MODE["evals"],
            what="Evals from the workbench land with the eval harness issue.\n"
            "Eval jobs started from the CLI already show on the Jobs screen (4).",
        )
