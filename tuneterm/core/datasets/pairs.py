"""Preference pairs as the DPO job reads them: ``read_pairs(path)``.

A row is OpenAI's ``{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output":
[...]}`` (``*_completion`` read as ``*_output``) or TRL's ``{"prompt": ..., "chosen": ..., "rejected":
...}``; each becomes TRL's conversational ``prompt``/``chosen``/``rejected``. Torch-free, so that the
launch plan (``tuneterm train --method dpo --dry-run``) checks a file with the same code the job's
worker reads it with, and a bad row fails before launch, naming its file, line and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.core.datasets.schemas import Reject, from_dpo
from tuneterm.core.errors import DatasetError
from tuneterm.core.jsonl import iter_jsonl

_KEEP = ("role", "content", "name", "tool_calls", "tool_call_id")


def _bad(path: Path, number: int, field: str, problem: str) -> DatasetError:
    return DatasetError(f"{path.name} line {number}: {problem}",
                        [("file", str(path)), ("line", str(number)), ("field", field)],
                        "a preference pair is {\"input\": {\"messages\": [...]}, \"preferred_output\": "
                        "[{\"role\": \"assistant\", ...}], \"non_preferred_output\": [...]} (or TRL's "
                        "prompt/chosen/rejected); check it with `tuneterm data validate`")


def _output(path: Path, number: int, row: dict, key: str) -> list[dict]:
    legacy = key.replace("_output", "_completion")  # the OpenAPI spelling; the docs use *_output
    out = row.get(key, row.get(legacy))
    if out is None:
        raise _bad(path, number, key, f"missing field '{key}'")
    if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict)
            and out[0].get("role") == "assistant"):
        raise _bad(path, number, key, f"'{key}' must be a list holding one assistant message")
    content = out[0].get("content")
    if not (isinstance(content, str) and content.strip()) and not out[0].get("tool_calls"):
        raise _bad(path, number, f"{key}[0].content", f"'{key}' has no content")
    return [{k: v for k, v in out[0].items() if k in _KEEP}]


def _pair(path: Path, number: int, row: dict) -> dict:
    if "input" not in row and {"chosen", "rejected"} <= row.keys():  # TRL style: as `data validate` reads it
        try:
            row, _ = from_dpo(row, {})
        except Reject as rej:
            raise _bad(path, number, rej.key or "-", str(rej)) from None
    inp = row.get("input")
    if inp is None:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise _bad(path, number, "input", f"missing field 'input' (not a preference pair; its fields: {keys})")
    messages = inp.get("messages") if isinstance(inp, dict) else None
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad(path, number, "input.messages", "'input.messages' must be a non-empty list of messages")
    pair = {"prompt": [{k: v for k, v in m.items() if k in _KEEP} for m in messages],
            "chosen": _output(path, number, row, "preferred_output"),
            "rejected": _output(path, number, row, "non_preferred_output")}
    if inp.get("tools"):
        pair["tools"] = json.dumps(inp["tools"])
    return pair


def read_pairs(path: str | Path) -> list[dict]:
    """Every pair of a JSONL file as TRL's conversational ``prompt``/``chosen``/``rejected``; the first
    bad row raises a DatasetError naming the file, line and field."""
    path = Path(path)
    rows = [_pair(path, number, row) for number, row in iter_jsonl(path, what="preference data")]
    if not rows:
        raise DatasetError("the preference file has no pairs", [("file", str(path))])
    if any("tools" in r for r in rows):
        for r in rows:
            r.setdefault("tools", None)
    return rows
