"""Labels of classification-like data: the final assistant reply, when it is a short label.

A dataset counts as classification when every example ends in a short one-line reply and the
replies take few distinct values (at most :data:`MAX_LABELS`, each used on average twice or more).

Classifiers read label data with :func:`read_labelled`: the text of an example is its last user
message, the label its last assistant message (stripped). The feature classifier
(``tuneterm.workers.classifier``) and the classification head (``tuneterm.workers.cls_head``) both
train on it, and the eval harness gives a classifier the same text (``core.evals.items.classifier_text``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tuneterm.core.errors import InputError

MAX_LABELS = 50
MAX_LABEL_CHARS = 64


def label_of(example: dict) -> str | None:
    """The last assistant message's content if it looks like a label, else None."""
    from tuneterm.core.datasets.schemas import messages_of

    for msg in reversed(messages_of(example)):
        if msg.get("role") == "assistant":
            content = msg.get("content")
            if isinstance(content, str) and 0 < len(content) <= MAX_LABEL_CHARS and "\n" not in content:
                return content.strip()
            return None
    return None


class LabelTally:
    """Counts labels while streaming; gives up (``distribution() -> None``) when it isn't classification."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.n = 0
        self.broken = False

    def add(self, example: dict) -> str | None:
        self.n += 1
        if self.broken:
            return None
        label = label_of(example)
        if label is None or (label not in self.counts and len(self.counts) >= MAX_LABELS):
            self.broken = True
            self.counts.clear()
            return None
        self.counts[label] += 1
        return label

    def distribution(self) -> dict[str, int] | None:
        if self.broken or not self.counts or len(self.counts) * 2 > self.n or len(self.counts) < 2:
            return None
        return dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))


def text_of(messages: list[dict]) -> str | None:
    """What a classifier reads in a conversation: its last user message (None when it has none)."""
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else None


def read_labelled(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, labels) from chat JSONL: text = last user turn, label = last assistant turn."""
    from tuneterm.core.datasets.formats import iter_chat_messages

    texts, labels = [], []
    for lineno, messages in iter_chat_messages(path):
        user = [m["content"] for m in messages if m.get("role") == "user"]
        answer = [m["content"] for m in messages if m.get("role") == "assistant"]
        if not user or not answer:
            raise InputError("a classification example needs a user and an assistant turn",
                             [("file", str(path)), ("line", lineno), ("field", "messages")])
        texts.append(str(user[-1]))
        labels.append(str(answer[-1]).strip())
    return texts, labels
