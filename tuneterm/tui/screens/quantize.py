"""QuantizeScreen: until the quantize issue lands in the TUI, it points at the command."""

from __future__ import annotations

from tuneterm.tui.navigation import BY_MODE
from tuneterm.tui.screens.placeholder import PlaceholderScreen


class QuantizeScreen(PlaceholderScreen):
    def __init__(self) -> None:
        super().__init__(
            BY_MODE["quantize"],
            what="Quantizing from the workbench lands with the quantization issue.\n"
            "Quantize jobs started from the CLI already show on the Jobs screen (4).",
        )
