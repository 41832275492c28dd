"""RecipeForm: a recipe's settings as a form, each with its comment from the recipe as help.

Values are edited as text (TOML-ish, like the command line's ``key.sub=value``); choices
and booleans are selects. :meth:`overrides` returns what differs from the recipe, in the
form ``tuneterm.core.recipes.resolve`` checks.
"""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, Static

SKIP = {"method"}


def as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "[]"
    return str(value)


def list_text(text: str) -> str:
    """A list setting's text as a JSON list: ``a, b`` and ``["a","b"]`` both give ``["a", "b"]``."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.dumps(json.loads(text))
        except ValueError:
            return text  # the resolver names the setting and the bad value
    return json.dumps([part.strip() for part in text.split(",") if part.strip()])


class RecipeForm(VerticalScroll):
    def __init__(self, flat: dict, comments: dict[str, str], choices: dict[str, tuple], **kwargs) -> None:
        super().__init__(**kwargs)
        self.flat = {k: v for k, v in flat.items() if k not in SKIP}
        self.comments = comments
        self.choices = choices

    def compose(self) -> ComposeResult:
        section = None
        for key, value in self.flat.items():
            head = key.split(".")[0] if "." in key else ""
            if head != section:
                section = head
                yield Static(f"[{head}]" if head else "", classes="form-section", markup=False)
            field_id = "f-" + key.replace(".", "--")
            with Horizontal(classes="setting"):
                yield Label(key.split(".", 1)[-1], classes="setting-key")
                if isinstance(value, bool) or key in self.choices:
                    options = ("true", "false") if isinstance(value, bool) else self.choices[key]
                    yield Select([(o, o) for o in options], value=as_text(value), allow_blank=False,
                                 compact=True, id=field_id, classes="setting-value")
                else:
                    yield Input(as_text(value), compact=True, id=field_id, classes="setting-value")
                yield Static(self.comments.get(key, ""), classes="setting-help", markup=False)

    def current(self) -> dict[str, str]:
        out = {}
        for key in self.flat:
            widget = self.query_one("#f-" + key.replace(".", "--"))
            out[key] = str(widget.value)
        return out

    def overrides(self) -> list[str]:
        """``key=value`` for every setting whose text differs from the recipe's."""
        out = []
        for key, text in self.current().items():
            if text.strip() != as_text(self.flat[key]):
                value = text.strip()
                if isinstance(self.flat[key], list):
                    value = list_text(value)
                out.append(f"{key}={value}")
        return out
