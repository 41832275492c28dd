"""ChatDiff: where two columns' answers differ, word by word.

:func:`word_diff` is the pure part (difflib over words, whitespace kept); the widget renders
it with the words only in the first answer struck in red and those only in the second in green.
"""

from __future__ import annotations

import difflib
import re

from textual.content import Content
from textual.widgets import Static

_WORDS = re.compile(r"\S+|\s+")


def word_diff(a: str, b: str) -> list[tuple[str, str, str]]:
    """``(op, text_in_a, text_in_b)`` runs; op is equal, replace, delete (only in a) or insert."""
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        out.append((op, "".join(wa[i1:i2]), "".join(wb[j1:j2])))
    return out


def first_difference(a: str, b: str) -> int | None:
    """The character offset in ``a`` where the answers stop agreeing (None when equal)."""
    if a == b:
        return None
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, _WORDS.findall(a), _WORDS.findall(b), autojunk=False).ratio()


class ChatDiff(Static):
    DEFAULT_CSS = """
    ChatDiff { height: auto; max-height: 12; border: round $secondary; padding: 0 1; overflow-y: auto; }
    """

    def show(self, label_a: str, a: str, label_b: str, b: str) -> None:
        parts = [Content.styled(f"{label_a} vs {label_b}: ", "bold")]
        at = first_difference(a, b)
        if at is None:
            parts.append(Content("identical answers"))
        else:
            parts.append(Content(f"{similarity(a, b):.0%} of words shared; they part after {at} characters\n"))
            for op, ta, tb in word_diff(a, b):
                if op == "equal":
                    parts.append(Content(ta))
                    continue
                if ta:
                    parts.append(Content.styled(ta, "strike red"))
                if tb:
                    parts.append(Content.styled(tb, "bold green"))
        self.update(Content("").join(parts))
