"""Write canonical examples out as OpenAI JSONL, Alpaca JSONL or ShareGPT JSONL.

OpenAI JSONL is the canonical form itself. Alpaca and ShareGPT cannot hold everything: tool
calls, ``weight`` and DPO pairs have no place there, so such examples are skipped and counted
(with the reason), never written half-converted. Output files appear atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tuneterm.core.errors import DatasetError, UsageError
from tuneterm.core.fsutil import atomic_writer

TARGETS = ("openai", "alpaca", "sharegpt")
TARGET_ALIASES = {"chat": "openai", "jsonl": "openai", "messages": "openai"}


class Unrepresentable(Exception):
    pass


@dataclass
class ExportResult:
    path: Path
    to: str
    written: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "to": self.to, "written": self.written, "skipped": self.skipped,
                "reasons": self.reasons}


def target_name(to: str) -> str:
    name = TARGET_ALIASES.get(to.lower(), to.lower())
    if name not in TARGETS:
        raise UsageError("unknown export format", [("format", to)], f"choose one of {', '.join(TARGETS)}")
    return name


def _plain_turns(ex: dict) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, [(role, text), ...]) for a plain chat; raises Unrepresentable otherwise."""
    if "messages" not in ex:
        raise Unrepresentable("preference pair")
    if ex.get("tools") or ex.get("functions"):
        raise Unrepresentable("tools")
    system = None
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(ex["messages"]):
        role, content = m.get("role"), m.get("content")
        if m.get("tool_calls") or m.get("function_call") or role in ("tool", "function"):
            raise Unrepresentable("tool calls")
        if "weight" in m and m["weight"] != 1:
            raise Unrepresentable("weight 0")
        if not isinstance(content, str):
            raise Unrepresentable("non-text content")
        if role in ("system", "developer"):
            if i != 0:
                raise Unrepresentable("system message inside the conversation")
            system = content
        else:
            turns.append((role, content))
    return system, turns


def to_alpaca(ex: dict) -> dict:
    system, turns = _plain_turns(ex)
    roles = [r for r, _ in turns]
    if len(turns) < 2 or len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise Unrepresentable("not alternating user/assistant turns")
    pairs = [[turns[i][1], turns[i + 1][1]] for i in range(0, len(turns), 2)]
    out: dict = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if system is not None:
        out["system"] = system
    if len(pairs) > 1:
        out["history"] = pairs[:-1]
    return out


def to_sharegpt(ex: dict) -> dict:
    system, turns = _plain_turns(ex)
    names = {"user": "human", "assistant": "gpt"}
    conv = [{"from": "system", "value": system}] if system is not None else []
    for role, text in turns:
        if role not in names:
            raise Unrepresentable(f"role {role}")
        conv.append({"from": names[role], "value": text})
    return {"conversations": conv}


CONVERT = {"openai": lambda ex: ex, "alpaca": to_alpaca, "sharegpt": to_sharegpt}


def export_examples(examples: Iterable[dict], out: Path, to: str = "openai") -> ExportResult:
    to = target_name(to)
    convert = CONVERT[to]
    result = ExportResult(Path(out), to)
    with atomic_writer(Path(out)) as fh:
        for ex in examples:
            try:
                row = convert(ex)
            except Unrepresentable as why:
                result.skipped += 1
                result.reasons[str(why)] = result.reasons.get(str(why), 0) + 1
                continue
            try:
                line = json.dumps(row, ensure_ascii=False)
                line.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: keep them as JSON escapes
                line = json.dumps(row)
            fh.write(line + "\n")
            result.written += 1
        if result.skipped and not result.written:  # nothing fits: fail before the empty file replaces OUT
            raise DatasetError(f"{to} cannot hold any of these examples", [
                ("reasons", ", ".join(f"{k} x{v}" for k, v in result.reasons.items()))],
                "export as openai (the canonical form keeps everything)")
    return result
