"""MaskView: an example's tokens as the model sees them; trained (assistant) tokens stand out."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

TRAINED = "bold black on green"
MASKED = "dim"


class MaskView(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.tokens: list[tuple[str, bool]] = []

    def show_tokens(self, tokens: list[tuple[str, bool]]) -> None:
        self.tokens = [(str(t), bool(trained)) for t, trained in tokens]
        text = Text()
        for i, (piece, trained) in enumerate(self.tokens):
            # Alternate underline so token boundaries show; newlines stay newlines.
            style = TRAINED if trained else MASKED
            if i % 2:
                style += " underline"
            text.append(piece.replace("\n", "⏎\n"), style=style)
        self.update(text)

    def show_message(self, message: str) -> None:
        self.tokens = []
        self.update(message)

    @property
    def n_trained(self) -> int:
        return sum(1 for _, t in self.tokens if t)
