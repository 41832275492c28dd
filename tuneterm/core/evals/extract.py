"""Answer extraction: the spec's ``extract`` steps applied to a model's raw output."""

from __future__ import annotations

import json
import re
import string
from typing import Any


def _first_json(text: str) -> str | None:
    """The first JSON object in ``text`` re-serialized canonically, or None."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return None


def apply_step(text: str, step: str | dict[str, Any]) -> str:
    if isinstance(step, dict):
        m = re.search(step["regex"], text, flags=re.DOTALL)
        if not m:
            return str(step.get("default", text))
        group = step.get("group", 1 if m.re.groups else 0)
        return m.group(group) or ""
    if step == "strip":
        return text.strip()
    if step == "lowercase":
        return text.lower()
    if step == "first_line":
        stripped = text.strip()
        return stripped.splitlines()[0] if stripped else ""
    if step == "first_word":
        words = text.split()
        return words[0] if words else ""
    if step == "remove_punctuation":
        return text.translate(str.maketrans("", "", string.punctuation.replace("-", "")))
    if step == "json":
        found = _first_json(text)
        return found if found is not None else text
    raise ValueError(f"unknown extract step {step!r}")


def extract(text: str, steps: list) -> str:
    for step in steps:
        text = apply_step(text, step)
    return text


def truncate_at_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
