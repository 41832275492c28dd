"""NavBar: the row of screens with their keys; the current one is highlighted."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class NavBar(Static):
    def __init__(self, active: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.active = active

    def on_mount(self) -> None:
        from tuneterm.tui.navigation import PLACES

        parts = []
        for place in PLACES:
            label = f" {place.key} {place.title} "
            if place.mode == self.active:
                parts.append(Content.styled(label, "reverse bold"))
            else:
                parts.append(Content.from_markup(f"[@click=app.goto('{place.mode}')]$label[/]", label=label))
        self.update(Content("").join(parts))  # two spaces between places: all eight fit in 80 columns
