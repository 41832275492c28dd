"""RecipePanel: a recipe as a form (RecipeForm) under a head line that shows the recipe's header,
then the comment of whichever setting has focus. Train and Quantize both use it.

The screen loads the recipe in a worker and calls :meth:`show`; :meth:`overrides` gives the
edited settings as ``key=value`` items for the recipe's resolver.
"""

from __future__ import annotations

from textual.containers import Vertical
from textual.widgets import Static

from tuneterm.tui.widgets.recipe_form import RecipeForm


class RecipePanel(Vertical):
    def __init__(self, hint: str = "edit values; tab moves", **kwargs) -> None:
        super().__init__(**kwargs)
        self.hint = hint
        self.title_line = ""

    def compose(self):
        yield Static("loading the recipe…", classes="hint recipe-head")
        yield Vertical(classes="recipe-slot")

    @property
    def head(self) -> Static:
        return self.query_one(".recipe-head", Static)

    @property
    def form(self) -> RecipeForm | None:
        found = self.query(RecipeForm)
        return found.first() if found else None

    async def show(self, title: str, header: str, flat: dict, comments: dict, choices: dict) -> RecipeForm:
        """Replace the form with ``flat``'s settings; ``title`` names the recipe file."""
        slot = self.query_one(".recipe-slot", Vertical)
        await slot.remove_children()
        form = RecipeForm(flat, comments, choices, classes="recipe-form")
        await slot.mount(form)
        first = header.splitlines()[0] if header else ""
        self.title_line = f"{title} — {first}  ({self.hint})" if first else f"{title}  ({self.hint})"
        self.head.update(self.title_line)
        return form

    def overrides(self) -> list[str]:
        form = self.form
        return form.overrides() if form is not None else []

    def on_descendant_focus(self, event) -> None:
        widget = event.widget
        form = self.form
        if form is not None and widget.id and widget.id.startswith("f-"):
            key = widget.id[2:].replace("--", ".")
            self.head.update(f"{key}: {form.comments.get(key, '')}")

    def on_descendant_blur(self, event) -> None:
        if self.title_line and not self.has_focus_within:
            self.head.update(self.title_line)
