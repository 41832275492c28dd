"""PlaceholderScreen: a screen whose work has not landed in the TUI yet says which command does it."""

from __future__ import annotations

from textual.containers import Center, Middle
from textual.widgets import Static

from tuneterm.tui.screens.base import WorkbenchScreen


class PlaceholderScreen(WorkbenchScreen):
    def __init__(self, place, reason: str = "", what: str = "") -> None:
        super().__init__()
        self.place = place
        self.MODE = place.mode
        self.reason = reason
        self.what = what or f"The {place.title} screen is not in this build yet."

    def compose_body(self):
        text = f"[b]{self.what}[/b]\n\nUse the command line meanwhile:\n\n    [b]{self.place.instead}[/b]"
        if self.reason:
            text += f"\n\n[dim]({self.reason})[/dim]"
        with Middle(id="placeholder"):
            with Center():
                yield Static(text, id="placeholder-text", classes="notice")
