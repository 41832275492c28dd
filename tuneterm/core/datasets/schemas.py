"""Schemas: what a row looks like (:func:`sniff_schema`) and how it becomes canonical chat.

Alpaca, ShareGPT, prompt/completion, classification (a system prompt listing the labels) and
extraction (a system prompt listing the keys; the answer is the JSON object) become
``{"messages": [...]}``; preference pairs become OpenAI's DPO form. A row that does not fit
raises :class:`Reject` with the problem kind, message and key.
"""

from __future__ import annotations

import json
from typing import Any, Callable

_EXTRACTION_KEYS = ("fields", "extracted", "output", "json", "data", "entities", "target")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                   "system": "system", "tool": "tool", "observation": "tool", "function": "tool"}

CLASSIFICATION_SYSTEM = "Classify the text. Answer with exactly one of these labels and nothing else: {labels}."
EXTRACTION_SYSTEM = ("Extract these fields from the text. Answer with one JSON object with exactly these "
                     "keys: {keys}. Use null for a missing value.")


def sniff_schema(row: Any) -> str | None:
    """The schema one row looks like, by its keys; None if it fits none."""
    if not isinstance(row, dict):
        return None
    keys = row.keys()
    if "messages" in keys:
        return "chat"
    if "input" in keys and ({"preferred_output", "preferred_completion"} & keys):
        return "dpo"
    if {"chosen", "rejected"} <= keys:
        return "dpo"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "text" in keys and "label" in keys:
        return "classification"
    if "text" in keys and _extraction_key(row):
        return "extraction"
    return None


def _extraction_key(row: dict) -> str | None:
    for key in _EXTRACTION_KEYS:
        if isinstance(row.get(key), dict):
            return key
    for key, value in row.items():
        if key != "text" and isinstance(value, dict):
            return key
    for key in _EXTRACTION_KEYS:  # a JSON object stored as text (CSV)
        value = row.get(key)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            return key
    return None


class Reject(Exception):
    def __init__(self, kind: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.key = kind, message, key


def apply_mapping(row: Any, mapping: dict | None) -> Any:
    if not mapping or not isinstance(row, dict):
        return row
    out = dict(row)
    for target, source in mapping.items():
        if source in row:
            out[target] = row[source]
    return out


def _text(row: dict, key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise Reject("format_error", f'"{key}" is missing', key)
        return ""
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise Reject("format_error", f'"{key}" must be a string, got {type(value).__name__}', key)
    return value


def _from_alpaca(row: dict, _ctx: dict) -> dict:
    instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
    messages: list[dict] = []
    if row.get("system"):
        messages.append({"role": "system", "content": _text(row, "system")})
    history = row.get("history") or []
    if not isinstance(history, list):
        raise Reject("format_error", '"history" must be a list of [question, answer] pairs', "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise Reject("format_error", "history entries are [question, answer] string pairs", f"history[{i}]")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row, "output")}]
    return {"messages": messages}


def _from_sharegpt(row: dict, _ctx: dict) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Reject("format_error", '"conversations" must be a non-empty list', "conversations")
    messages: list[dict] = []
    if isinstance(row.get("system"), str) and row["system"]:
        messages.append({"role": "system", "content": row["system"]})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Reject("format_error", "each turn must be an object with from/value", f"conversations[{i}]")
        who = turn.get("from", turn.get("role"))
        role = _SHAREGPT_ROLES.get(str(who).lower()) if who is not None else None
        if role is None:
            raise Reject("format_error", f"unknown speaker {who!r}", f"conversations[{i}].from")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise Reject("format_error", "value must be a string", f"conversations[{i}].value")
        messages.append({"role": role, "content": value})
    return {"messages": messages}


def _from_prompt_completion(row: dict, _ctx: dict) -> dict:
    return {"messages": [{"role": "user", "content": _text(row, "prompt")},
                         {"role": "assistant", "content": _text(row, "completion")}]}


def label(row: dict) -> str:
    value = row.get("label")
    if value is None or isinstance(value, (dict, list)) or (isinstance(value, str) and not value.strip()):
        raise Reject("format_error", "the label is missing or empty", "label")
    return str(value)


def _from_classification(row: dict, ctx: dict) -> dict:
    labels = ctx.get("labels") or []
    return {"messages": [
        {"role": "system", "content": CLASSIFICATION_SYSTEM.format(labels=", ".join(labels))},
        {"role": "user", "content": _text(row, "text")},
        {"role": "assistant", "content": label(row)},
    ]}


def extraction_object(row: dict) -> dict:
    key = _extraction_key(row)
    value = row.get(key) if key else None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise Reject("format_error", f'"{key}" is not a JSON object', key) from None
    if not isinstance(value, dict):
        raise Reject("format_error", "no JSON object of fields next to the text", key or "fields")
    return value


def _from_extraction(row: dict, ctx: dict) -> dict:
    obj = extraction_object(row)
    keys = ctx.get("keys") or list(obj)
    answer = {k: obj.get(k) for k in keys}
    return {"messages": [
        {"role": "system", "content": EXTRACTION_SYSTEM.format(keys=", ".join(keys))},
        {"role": "user", "content": _text(row, "text")},
        {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
    ]}


def _as_messages(value: Any, key: str) -> list:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise Reject("invalid_preference", f'"{key}" must be a list of messages', key)


def from_dpo(row: dict, _ctx: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    if "chosen" in row and "rejected" in row and "input" not in row:  # TRL style
        prompt = row.get("prompt")
        chosen, rejected = _as_messages(row["chosen"], "chosen"), _as_messages(row["rejected"], "rejected")
        if isinstance(prompt, str):
            msgs = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            msgs = prompt
        else:
            msgs, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
        return {"input": {"messages": msgs}, "preferred_output": chosen[-1:],
                "non_preferred_output": rejected[-1:]}, notes
    out = {k: v for k, v in row.items()}
    for good, legacy in (("preferred_output", "preferred_completion"),
                         ("non_preferred_output", "non_preferred_completion")):
        if legacy in out:
            if good not in out:
                out[good] = out.pop(legacy)
                notes.append(legacy)
            else:
                out.pop(legacy)
    return out, notes


CONVERTERS: dict[str, Callable[[dict, dict], dict]] = {
    "alpaca": _from_alpaca, "sharegpt": _from_sharegpt, "prompt_completion": _from_prompt_completion,
    "classification": _from_classification, "extraction": _from_extraction,
}


def messages_of(example: dict) -> list[dict]:
    """The conversation a model sees for one canonical example: its ``messages``, or a preference
    pair's prompt (``input.messages``) followed by its preferred reply. Non-dict entries are dropped."""
    if not isinstance(example, dict):
        return []
    if "messages" in example:
        msgs = example.get("messages")
    else:
        inp = example.get("input") if isinstance(example.get("input"), dict) else {}
        out = example.get("preferred_output")
        msgs = list(inp.get("messages") or []) + (list(out) if isinstance(out, list) else [])
    return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
