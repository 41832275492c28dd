"""The tuneterm Textual app."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static


class TunetermApp(App):
    TITLE = "tuneterm"
    SUB_TITLE = "fine-tuning workbench"
    BINDINGS = [Binding("q", "quit", "Quit", id="quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("tuneterm — datasets, training, quantization, chat and evals.", id="welcome")
        yield Footer()
