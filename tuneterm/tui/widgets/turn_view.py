"""ChatTurnView: one example rendered as the chat it is (role, content), or the raw bad line."""

from __future__ import annotations

import json

from textual.containers import VerticalScroll
from textual.widgets import Static


def _content(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def turns(example: dict) -> list[tuple[str, str, str]]:
    """(role, label, text) for each turn; DPO pairs show both replies."""
    out: list[tuple[str, str, str]] = []
    if isinstance(example.get("messages"), list):
        messages = example["messages"]
        extra: list[tuple[str, list]] = []
    else:
        inp = example.get("input") if isinstance(example.get("input"), dict) else {}
        messages = inp.get("messages") or []
        extra = [("preferred", example.get("preferred_output") or []),
                 ("non-preferred", example.get("non_preferred_output") or [])]
    for m in messages:
        if not isinstance(m, dict):
            out.append(("bad", "?", repr(m)))
            continue
        role = str(m.get("role", "?"))
        label = role + (" · weight 0 (not trained)" if m.get("weight") == 0 else "")
        text = _content(m.get("content"))
        if m.get("tool_calls"):
            text += ("\n" if text else "") + "tool calls: " + json.dumps(m["tool_calls"], ensure_ascii=False)
        out.append((role, label, text))
    for name, replies in extra:
        for m in replies if isinstance(replies, list) else []:
            if isinstance(m, dict):
                out.append(("assistant", f"assistant · {name}", _content(m.get("content"))))
    return out


class ChatTurnView(VerticalScroll):
    """Shows an example; ``show_raw`` shows a line that is not an example, with its problems."""

    can_focus = True

    def show_example(self, example: dict) -> None:
        self.remove_children()
        widgets = []
        for role, label, text in turns(example):
            turn = Static(text or "(empty)", classes=f"turn role-{role}", markup=False)
            turn.border_title = label
            widgets.append(turn)
        if not widgets:
            widgets.append(Static("(no messages)", classes="turn role-bad", markup=False))
        self.mount_all(widgets)
        self.scroll_home(animate=False)

    def show_raw(self, raw: str, problems: list[str]) -> None:
        self.remove_children()
        line = Static(raw or "(empty line)", classes="turn role-bad", markup=False)
        line.border_title = "raw line (not an example)"
        self.mount(line)
        if problems:
            self.mount(Static("\n".join(problems), classes="turn-problems", markup=False))
        self.scroll_home(animate=False)
