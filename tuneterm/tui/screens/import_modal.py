"""ImportModal: a file path (with completion), an optional name; import it or only validate it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from tuneterm.tui.suggesters import PathSuggester

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow")


@dataclass
class ImportRequest:
    path: str
    name: str | None
    skip_invalid: bool
    validate_only: bool


class ImportModal(ModalScreen[ImportRequest | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="import.cancel"),
        Binding("ctrl+l", "validate_only", "Validate only", id="import.validate"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="import-dialog"):
            yield Static("[b]Import a dataset[/b]  (JSONL, JSON, CSV/TSV, Parquet; chat, Alpaca, ShareGPT, DPO...)",
                         classes="dialog-text")
            path = Input(placeholder="path, e.g. sample_data/tickets/train.jsonl", id="import-path",
                         suggester=PathSuggester(SUFFIXES))
            path.border_title = "file (→ completes)"
            yield path
            name = Input(placeholder="name (default: from the file name)", id="import-name")
            name.border_title = "name"
            yield name
            yield Checkbox("skip invalid rows (they go to a rejects file)", id="import-skip")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Validate only (^l)", id="validate")
                yield Button("Import (enter)", id="import", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#import-path", Input).focus()

    def _request(self, validate_only: bool) -> ImportRequest | None:
        path = self.query_one("#import-path", Input).value.strip()
        if not path:
            self.notify("type the path of the file first", severity="warning", timeout=3)
            return None
        return ImportRequest(path, self.query_one("#import-name", Input).value.strip() or None,
                             self.query_one("#import-skip", Checkbox).value, validate_only)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "import-path" and not self.query_one("#import-name", Input).value:
            self.query_one("#import-name", Input).focus()
            return
        if request := self._request(False):
            self.dismiss(request)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif request := self._request(event.button.id == "validate"):
            self.dismiss(request)

    def action_validate_only(self) -> None:
        if request := self._request(True):
            self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)
