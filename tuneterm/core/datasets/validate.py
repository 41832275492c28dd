"""Validate a dataset file, streaming: every problem with its file, line, key and a hint.

Memory stays flat with the file's size: rows are read one at a time, duplicates are found
through 8-byte digests, and at most ``keep`` problems of each kind are kept (all are
counted). ``validate_file(path, model)`` adds the per-model checks (token limit, OpenAI's
stricter rules) when a target model is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneterm.core.datasets import formats
from tuneterm.core.datasets.rules import ERROR, OPENAI_ERRORS, RULES, WARNING, Problem, problem

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"})
EXAMPLE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
DPO_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|\[/?INST\]|<(?:start|end)_of_turn>|</s>")
OPENAI_MAX_BYTES = 512 * 1024 * 1024
MIN_EXAMPLES = 10
INTERNAL = "unexpected shape (a tuneterm bug, please report it)"


@dataclass
class ValidationReport:
    file: str
    format: str = ""
    model: str | None = None
    tokenizer: str | None = None
    token_limit: int | None = None
    n_examples: int = 0  # rows read as examples (valid or not)
    n_valid: int = 0  # examples without errors
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # kind -> number of problems
    truncated: bool = False  # some problems were counted but not kept

    @property
    def n_errors(self) -> int:
        return sum(n for k, n in self.counts.items() if self.severity_of(k) == ERROR)

    @property
    def n_warnings(self) -> int:
        return sum(n for k, n in self.counts.items() if self.severity_of(k) == WARNING)

    def severity_of(self, kind: str) -> str:
        if kind in OPENAI_ERRORS and self.model and _is_openai(self.model):
            return ERROR
        return RULES[kind][0]

    @property
    def status(self) -> str:
        return "errors" if self.n_errors else "warnings" if self.n_warnings else "clean"

    def to_dict(self) -> dict:
        return {
            "file": self.file, "format": self.format, "model": self.model, "tokenizer": self.tokenizer,
            "token_limit": self.token_limit, "status": self.status, "n_examples": self.n_examples,
            "n_valid": self.n_valid, "errors": self.n_errors, "warnings": self.n_warnings,
            "counts": dict(sorted(self.counts.items())), "truncated": self.truncated,
            "problems": [p.to_dict() for p in self.problems],
        }


def _is_openai(model: str) -> bool:
    from tuneterm.core.datasets.tokens import is_openai_model

    return is_openai_model(model)


def example_digest(example: Any) -> bytes:
    """8 bytes that are equal for equal examples (key order and spacing do not matter)."""
    return _digest(example)[0]


def _digest(example: Any) -> tuple[bytes, bool]:
    """(digest, text is valid Unicode): lone surrogates from JSON escapes make the second False."""
    text = json.dumps(example, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    try:
        data, ok = text.encode("utf-8"), True
    except UnicodeEncodeError:
        data, ok = text.encode("utf-8", "surrogatepass"), False
    return hashlib.blake2b(data, digest_size=8).digest(), ok


# --- the per-example rules ---------------------------------------------------------------------------


class _Checker:
    """Collects problems for one row; ``add`` knows the file, line and unit."""

    def __init__(self, file: str, line: int, unit: str, openai: bool) -> None:
        self.file, self.line, self.unit, self.openai = file, line, unit, openai
        self.found: list[Problem] = []

    def add(self, kind: str, message: str, key: str | None = None) -> None:
        severity = ERROR if (self.openai and kind in OPENAI_ERRORS) else None
        self.found.append(problem(self.file, self.line, kind, message, key, self.unit, severity))


def _check_content_text(c: _Checker, text: str, key: str) -> None:
    m = SPECIAL_TOKEN.search(text)
    if m:
        c.add("reserved_special_token", f"{m.group(0)!r} appears in the text", key)


def _check_tool_calls(c: _Checker, calls: Any, key: str, pending: set[str]) -> None:
    if not isinstance(calls, list) or not calls:
        c.add("invalid_tool_call", "tool_calls must be a non-empty list", key)
        return
    for j, call in enumerate(calls):
        k = f"{key}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            c.add("invalid_tool_call", "a tool call needs function.name", k)
            continue
        if call.get("type", "function") != "function":
            c.add("invalid_tool_call", f"type is {call.get('type')!r}, expected 'function'", f"{k}.type")
        args = fn.get("arguments")
        if not isinstance(args, str):
            c.add("invalid_tool_call", "function.arguments must be a JSON string", f"{k}.function.arguments")
        else:
            try:
                json.loads(args)
            except ValueError:
                c.add("invalid_tool_call", "function.arguments is not valid JSON", f"{k}.function.arguments")
        if isinstance(call.get("id"), str):
            pending.add(call["id"])
        else:
            c.add("invalid_tool_call", "a tool call needs a string id", f"{k}.id")


def _check_messages(c: _Checker, messages: list, prefix: str, *, final: bool) -> dict:
    """Rules for a list of messages; ``final`` = a full training conversation (not a DPO prompt)."""
    roles: list[str] = []
    has_assistant = trainable = False
    seen_other = False
    pending: set[str] = set()
    for i, msg in enumerate(messages):
        key = f"{prefix}[{i}]"
        if not isinstance(msg, dict):
            c.add("message_type", f"message {i + 1} is a {type(msg).__name__}, not an object", key)
            continue
        role = msg.get("role")
        if "role" not in msg:
            c.add("message_missing_key", f"message {i + 1} has no role", f"{key}.role")
        elif not isinstance(role, str) or role not in ROLES:
            c.add("unrecognized_role", f"message {i + 1} has role {role!r}; expected one of "
                  "system, developer, user, assistant, tool", f"{key}.role")
        for extra in msg.keys() - MESSAGE_KEYS:
            c.add("message_unrecognized_key", f"message {i + 1} has the key {extra!r}", f"{key}.{extra}")
        calls = msg.get("tool_calls")
        is_call = role == "assistant" and (calls is not None or msg.get("function_call"))
        if calls is not None:
            if role != "assistant":
                c.add("invalid_tool_call", f"tool_calls on a {role} message", f"{key}.tool_calls")
            else:
                _check_tool_calls(c, calls, f"{key}.tool_calls", pending)
        if "content" not in msg:
            if not is_call:
                c.add("message_missing_key", f"message {i + 1} has no content", f"{key}.content")
        else:
            content = msg["content"]
            if content is None:
                if not is_call:
                    c.add("missing_content", f"message {i + 1} has null content", f"{key}.content")
            elif isinstance(content, str):
                if not content.strip() and not is_call:
                    if role == "assistant":
                        c.add("empty_assistant_message", f"message {i + 1} (assistant) is empty", f"{key}.content")
                    else:
                        c.add("empty_content", f"message {i + 1} ({role}) is empty", f"{key}.content")
                elif "<" in content or "[" in content:
                    _check_content_text(c, content, f"{key}.content")
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if not (isinstance(part, dict) and isinstance(part.get("type"), str)):
                        c.add("missing_content", "content parts are objects with a type", f"{key}.content[{j}]")
                    elif part["type"] == "text":
                        if not isinstance(part.get("text"), str):
                            c.add("missing_content", "a text part needs a text string", f"{key}.content[{j}].text")
                        else:
                            _check_content_text(c, part["text"], f"{key}.content[{j}].text")
            else:
                c.add("missing_content", f"message {i + 1} content is a {type(content).__name__}, "
                      "not a string", f"{key}.content")
        if "weight" in msg:
            w = msg["weight"]
            if role != "assistant":
                c.add("invalid_weight", f"weight on a {role} message", f"{key}.weight")
            elif isinstance(w, bool) or w not in (0, 1):
                c.add("invalid_weight", f"weight is {w!r}; it must be 0 or 1", f"{key}.weight")
        if role in ("system", "developer"):
            if seen_other:
                c.add("roles_out_of_order", f"message {i + 1} is a {role} message after the conversation "
                      "started", f"{key}.role")
        elif isinstance(role, str):
            seen_other = True
        if role == "tool":
            tcid = msg.get("tool_call_id")
            if not isinstance(tcid, str):
                c.add("message_missing_key", f"message {i + 1} (tool) has no tool_call_id", f"{key}.tool_call_id")
            elif tcid not in pending:
                c.add("tool_message_unmatched", f"tool_call_id {tcid!r} matches no earlier tool call",
                      f"{key}.tool_call_id")
        if role == "assistant":
            has_assistant = True
            if msg.get("weight", 1) != 0:
                trainable = True
        if isinstance(role, str):
            roles.append(role)
    if final:
        if not has_assistant:
            c.add("example_missing_assistant_message", "no assistant message", prefix)
        elif not trainable:
            c.add("no_trainable_assistant", "every assistant message has weight 0", prefix)
        elif roles and roles[-1] != "assistant":
            c.add("last_message_not_assistant", f"the last message is {roles[-1]}, not assistant", prefix)
        if "system" not in roles and "developer" not in roles:
            c.add("missing_system_message", "no system message", prefix)
    if "user" not in roles:
        c.add("missing_user_message", "no user message", prefix)
    return {"roles": roles}


def _check_tools(c: _Checker, tools: Any) -> None:
    if not isinstance(tools, list) or not tools:
        c.add("invalid_tools", "tools must be a non-empty list", "tools")
        return
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str):
            c.add("invalid_tools", "a tool is {\"type\": \"function\", \"function\": {\"name\": ...}}", f"tools[{i}]")


def check_chat(c: _Checker, ex: dict) -> None:
    messages = ex.get("messages")
    if not isinstance(messages, list) or not messages:
        c.add("missing_messages_list", "\"messages\" is missing or empty" if not messages
              else f"\"messages\" is a {type(messages).__name__}, not a list", "messages")
        return
    for extra in ex.keys() - EXAMPLE_KEYS:
        c.add("unknown_key", f"unknown top-level key {extra!r}", extra)
    if "tools" in ex:
        _check_tools(c, ex["tools"])
    _check_messages(c, messages, "messages", final=True)


def check_dpo(c: _Checker, ex: dict) -> None:
    inp = ex.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list) or not inp["messages"]:
        c.add("invalid_preference", "input.messages must be a non-empty list", "input.messages")
    else:
        if "tools" in inp:
            _check_tools(c, inp["tools"])
        _check_messages(c, inp["messages"], "input.messages", final=False)
    for extra in ex.keys() - DPO_KEYS:
        c.add("unknown_key", f"unknown top-level key {extra!r}", extra)
    outputs = []
    for key in ("preferred_output", "non_preferred_output"):
        out = ex.get(key)
        if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict)
                and out[0].get("role") == "assistant"):
            c.add("invalid_preference", f"{key} must hold exactly one assistant message", key)
            continue
        content = out[0].get("content")
        if not isinstance(content, str) or not content.strip():
            if not out[0].get("tool_calls"):
                c.add("invalid_preference", f"{key} has no content", f"{key}[0].content")
        elif "<" in content or "[" in content:
            _check_content_text(c, content, f"{key}[0].content")
        outputs.append(out[0])
    if len(outputs) == 2 and outputs[0] == outputs[1]:
        c.add("identical_preference", "preferred and non-preferred outputs are identical", "preferred_output")


# --- the streaming validator -----------------------------------------------------------------------


class Validator:
    """Feed it :class:`formats.Record`s; ``finish()`` returns the report."""

    def __init__(self, file: str, model: str | None = None, keep: int = 200, fmt: str = "",
                 split: str | None = None, seen: dict | None = None) -> None:
        self.report = ValidationReport(file=file, model=model, format=fmt)
        self.keep = keep
        self.openai = bool(model) and _is_openai(model)
        # digest -> (line, split, file) of its first occurrence; share one dict between the
        # validators of a dataset's splits to catch train/val/test overlap.
        self.seen: dict[bytes, tuple[int, str | None, str]] = {} if seen is None else seen
        self.split = split
        self.last_digest: bytes | None = None  # of the last example checked (stats reuse it)
        self.counter = None
        if model:
            from tuneterm.core.datasets.tokens import counter_for

            self.counter = counter_for(model)
            self.report.tokenizer, self.report.token_limit = self.counter.name, self.counter.limit
        self._pending: list[tuple[formats.Record, dict]] = []  # awaiting a batched token count

    def _record(self, p: Problem) -> None:
        counts = self.report.counts
        n = counts.get(p.kind, 0)
        counts[p.kind] = n + 1
        if n < self.keep:
            self.report.problems.append(p)
        else:
            self.report.truncated = True

    def check(self, rec: formats.Record) -> list[Problem]:
        """Every problem of one record (reading, conversion, rules, duplicates); counted too."""
        found = list(rec.problems)
        ex = rec.example
        if ex is not None:
            self.report.n_examples += 1
            c = _Checker(self.report.file, rec.line, rec.unit, self.openai)
            try:
                if not isinstance(ex, dict):
                    c.add("data_type", f"the {rec.unit} is a {type(ex).__name__}, not an object")
                elif rec.schema == "dpo":
                    check_dpo(c, ex)
                else:
                    check_chat(c, ex)
            except Exception as exc:  # a shape no rule foresaw: report it on its line, never crash
                c.add("format_error", f"{INTERNAL}: {type(exc).__name__}: {exc}")
            digest, valid_unicode = _digest(ex)
            self.last_digest = digest
            if not valid_unicode:
                c.add("invalid_unicode", "a string holds a lone surrogate (\\ud800-\\udfff)")
            found += c.found
            first = self.seen.get(digest)
            if first is None:
                self.seen[digest] = (rec.line, self.split, self.report.file)
            elif first[1] != self.split:
                found.append(problem(self.report.file, rec.line, "split_overlap",
                                     f"this {self.split} example is also in {first[1]} ({first[2]}, "
                                     f"{rec.unit} {first[0]})", unit=rec.unit))
            else:
                found.append(problem(self.report.file, rec.line, "duplicate_example",
                                     f"same as {rec.unit} {first[0]}", unit=rec.unit))
        elif not any(p.severity == ERROR for p in found) and not any(p.kind == "blank_line" for p in found):
            found.append(problem(self.report.file, rec.line, "format_error", "the row could not be read",
                                 unit=rec.unit))
        for p in found:
            if self.openai and p.kind in OPENAI_ERRORS:
                p.severity = ERROR
            self._record(p)
        return found

    def feed(self, rec: formats.Record) -> list[Problem]:
        found = self.check(rec)
        bad = any(p.severity == ERROR for p in found)
        if rec.example is not None and not bad:
            self.report.n_valid += 1
            if self.counter is not None and self.counter.limit:
                self._pending.append((rec, rec.example))
                if len(self._pending) >= 512:
                    self._flush_tokens()
        return found

    def _flush_tokens(self) -> None:
        if not self._pending:
            return
        examples = [ex for _r, ex in self._pending]
        counts = self.counter.count_many(examples)
        notes = self.counter.template_problems(examples)
        for (rec, _ex), n, note in zip(self._pending, counts, notes):
            if note is not None:
                self._record(problem(self.report.file, rec.line, note[0], note[1], unit=rec.unit))
                if note[0] == "template_error":
                    self.report.n_valid -= 1
                    continue
            if n > self.counter.limit:
                self._record(problem(self.report.file, rec.line, "over_token_limit",
                                     f"{n:,} tokens, the limit for {self.counter.model} is {self.counter.limit:,}",
                                     unit=rec.unit))
                self.report.n_valid -= 1
        self._pending = []

    def finish(self, size_bytes: int | None = None) -> ValidationReport:
        self._flush_tokens()
        r = self.report
        if r.n_examples == 0:
            self._record(problem(r.file, None, "empty_file", "no examples in the file", unit="file"))
        elif r.n_valid < MIN_EXAMPLES:
            self._record(problem(r.file, None, "too_few_examples",
                                 f"{r.n_valid} valid examples; OpenAI requires at least {MIN_EXAMPLES}",
                                 unit="file", severity=ERROR if self.openai else None))
        if self.openai and size_bytes and size_bytes > OPENAI_MAX_BYTES:
            self._record(problem(r.file, None, "file_too_large",
                                 f"{size_bytes / 2**20:.0f} MB, the limit is 512 MB", unit="file"))
        r.problems.sort(key=lambda p: (p.line is not None, p.line or 0))
        return r


def validate_records(records: Iterator[formats.Record], file: str, model: str | None = None,
                     fmt: str = "", size_bytes: int | None = None, keep: int = 200,
                     split: str | None = None, seen: dict | None = None) -> ValidationReport:
    v = Validator(file, model, keep=keep, fmt=fmt, split=split, seen=seen)
    for rec in records:
        v.feed(rec)
    return v.finish(size_bytes)


def validate_file(path: str | Path, model: str | None = None, fmt: str | None = None,
                  mapping: dict | None = None, keep: int = 200) -> ValidationReport:
    """Validate one file (any importable format) against every rule, and ``model``'s limits if given."""
    path = Path(path)
    form = formats.detect(path, fmt, mapping)
    size = path.stat().st_size if path.is_file() else None
    return validate_records(formats.iter_records(path, form, mapping), str(path), model, str(form), size, keep)


def validate_splits(files: dict[str, Path], model: str | None = None, keep: int = 200) -> ValidationReport:
    """Validate a dataset's split files together: every rule on each, plus ``split_overlap``
    for an example that appears in two splits (train/validation leakage). One merged report."""
    seen: dict = {}
    merged: ValidationReport | None = None
    for split, path in files.items():
        form = formats.detect(path)
        r = validate_records(formats.iter_records(path, form), str(path), model, str(form),
                             Path(path).stat().st_size, keep, split=split, seen=seen)
        if merged is None:
            merged = r
            merged.file = ", ".join(str(p) for p in files.values())
            continue
        merged.n_examples += r.n_examples
        merged.n_valid += r.n_valid
        merged.problems += r.problems
        merged.truncated = merged.truncated or r.truncated
        for kind, n in r.counts.items():
            merged.counts[kind] = merged.counts.get(kind, 0) + n
    assert merged is not None, "validate_splits needs at least one file"
    # too_few_examples is judged per split above; for the dataset it is about the training file only.
    return merged
