"""Small dialogs: ConfirmModal (yes/no) and ArtifactModal (a job's output, its model ref)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class ArtifactModal(ModalScreen[None]):
    """Shows where a job's artifact is and the reference that names it; c copies the ref."""

    BINDINGS = [
        Binding("c", "copy", "Copy ref", id="artifact.copy"),
        Binding("escape,enter", "close", "Close", id="artifact.close"),
    ]

    def __init__(self, job_id: str, ref: str | None, path: str, facts: list[tuple[str, str]]) -> None:
        super().__init__()
        self.job_id, self.ref, self.path, self.facts = job_id, ref, path, facts

    def compose(self) -> ComposeResult:
        lines = [f"[b]job {self.job_id}[/b]", "", f"output: {self.path}"]
        lines.append(f"model ref: [b]{self.ref}[/b]" if self.ref else "model ref: (no model artifact)")
        lines += [f"{label}: {value}" for label, value in self.facts]
        if self.ref:
            lines += ["", f"chat with it:  tuneterm chat {self.ref}"]
        with Vertical(classes="dialog"):
            yield Static("\n".join(lines), classes="dialog-text", markup=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy ref (c)", id="copy", disabled=not self.ref)
                yield Button("Close (esc)", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "copy":
            self.action_copy()
        else:
            self.dismiss(None)

    def action_copy(self) -> None:
        if self.ref:
            self.app.copy_to_clipboard(self.ref)
            self.notify(f"copied {self.ref}", timeout=3)

    def action_close(self) -> None:
        self.dismiss(None)


class PromptModal(ModalScreen[str | None]):
    """One line of input (a model reference, a line number...); enter accepts, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "", suggester=None) -> None:
        super().__init__()
        self.question, self.value, self.placeholder, self.suggester = question, value, placeholder, suggester

    def compose(self) -> ComposeResult:
        from textual.widgets import Input

        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text")
            yield Input(self.value, placeholder=self.placeholder, suggester=self.suggester, id="prompt-input")
            yield Static("enter: OK · escape: cancel · right arrow: take the suggestion", classes="hint")

    def on_input_submitted(self, event) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
