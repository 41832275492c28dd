"""MaskPanel: the current example's tokens (MaskView) under a line that counts trained vs masked."""

from __future__ import annotations

from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from tuneterm.tui.widgets.mask_view import MaskView


class MaskPanel(Vertical):
    def compose(self):
        yield Static("", id="mask-head")
        with VerticalScroll(id="mask-scroll"):
            yield MaskView(id="mask")

    @property
    def view(self) -> MaskView:
        return self.query_one(MaskView)

    def show_message(self, text: str) -> None:
        self.view.show_message(text)

    def tokenizing(self, model: str, unit: str, line: int) -> None:
        self.query_one("#mask-head", Static).update(f"{model}: tokenizing {unit} {line}…")

    def show_tokens(self, model: str, line: int, tokens: list) -> None:
        view = self.view
        view.show_tokens(tokens)
        self.query_one("#mask-head", Static).update(
            f"{model} · line {line} · {len(view.tokens)} tokens, "
            f"[reverse green]{view.n_trained} trained[/] · [dim]{len(view.tokens) - view.n_trained} masked[/]")
