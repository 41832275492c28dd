"""The chat screen's dialogs: one line of input, generation settings, saving a turn, reopening."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static, TextArea

_DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 80%; max-width: 100; height: auto; max-height: 90%; border: thick $primary;
                    background: $surface; padding: 1 2; }}
{name} Label {{ margin-top: 1; }}
{name} TextArea {{ height: 8; }}
{name} OptionList {{ height: auto; max-height: 16; }}
{name} .hint {{ color: $text-muted; }}
"""


class ChatLineModal(ModalScreen[str | None]):
    """One line: a model reference, a file path, a dataset name."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="ChatLineModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="chat.dialog.cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question, self.value, self.placeholder = question, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            yield Input(self.value, placeholder=self.placeholder, id="line")
            yield Static("enter: OK · escape: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChatSettingsModal(ModalScreen[dict | None]):
    """System prompt and generation settings; for a column, blank fields inherit the shared ones."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="ChatSettingsModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="chat.dialog.cancel")]
    FIELDS = (("temperature", "temperature (0 = greedy)"), ("top_p", "top_p"),
              ("max_tokens", "max tokens"), ("seed", "seed (blank = none)"))

    def __init__(self, title: str, system: str, params: dict, inherit: bool = False) -> None:
        super().__init__()
        self.title_text, self.system, self.params, self.inherit = title, system, params, inherit

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.title_text}[/b]")
            if self.inherit:
                yield Static("blank = use the shared setting", classes="hint")
            yield Label("system prompt")
            yield Input(self.system or "", id="system")
            for key, label in self.FIELDS:
                yield Label(label)
                value = self.params.get(key)
                yield Input("" if value is None else str(value), id=f"p-{key}")
            with Horizontal():
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")
            yield Static("", id="problem", classes="hint")

    def _collect(self) -> dict:
        params: dict = {}
        for key, _label in self.FIELDS:
            raw = self.query_one(f"#p-{key}", Input).value.strip()
            if not raw:
                if not self.inherit and key == "seed":
                    params["seed"] = None
                continue
            try:
                params[key] = int(raw) if key in ("max_tokens", "seed") else float(raw)
            except ValueError:
                raise ValueError(f"{key}: {raw!r} is not a number") from None
        if "temperature" in params and not 0 <= params["temperature"] <= 2:
            raise ValueError("temperature must be between 0 and 2")
        if "top_p" in params and not 0 < params["top_p"] <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if "max_tokens" in params and params["max_tokens"] < 1:
            raise ValueError("max tokens must be at least 1")
        return {"system": self.query_one("#system", Input).value, "params": params}

    def _accept(self) -> None:
        try:
            self.dismiss(self._collect())
        except ValueError as exc:
            self.query_one("#problem", Static).update(str(exc))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._accept()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._accept()

    def action_cancel(self) -> None:
        self.dismiss(None)


class SaveTurnModal(ModalScreen[tuple[str, str] | None]):
    """The answer to save (editable) and the dataset name or JSONL path to append it to."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="SaveTurnModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="chat.dialog.cancel")]

    def __init__(self, model: str, answer: str, target: str = "") -> None:
        super().__init__()
        self.model, self.answer, self.target = model, answer, target

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Save this turn as a training example[/b] (answer of {self.model}; edit it if needed)")
            yield TextArea(self.answer, id="answer")
            yield Label("dataset name or .jsonl path")
            yield Input(self.target, placeholder="chat-fixes", id="target")
            with Horizontal():
                yield Button("Save", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def _accept(self) -> None:
        target = self.query_one("#target", Input).value.strip()
        if target:
            self.dismiss((target, self.query_one("#answer", TextArea).text))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._accept()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._accept()

    def action_cancel(self) -> None:
        self.dismiss(None)


class OpenConversationModal(ModalScreen[int | None]):
    """Pick a saved conversation (newest first)."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="OpenConversationModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="chat.dialog.cancel")]

    def __init__(self, summaries: list) -> None:
        super().__init__()
        self.summaries = summaries

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Reopen a conversation[/b]")
            if not self.summaries:
                yield Static("no saved conversations yet (ctrl+s saves one)", classes="hint")
            from textual.widgets.option_list import Option

            yield OptionList(*[Option(f"#{s.id} {s.title}  ·  {s.n_turns} turns  ·  {', '.join(s.models)}",
                                      id=str(s.id)) for s in self.summaries], id="conversations")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)
