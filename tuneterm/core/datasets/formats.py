"""Detect a dataset's format and stream it as canonical examples (OpenAI chat JSONL).

A format has two parts: the *container* (``jsonl``, ``json`` array, ``csv``, ``tsv``,
``parquet``, ``arrow``, ``hf`` = anything HF ``datasets`` loads from a local path) and the
*schema* of each row (``chat``, ``dpo``, ``alpaca``, ``sharegpt``, ``prompt_completion``,
``classification``, ``extraction``). Both are detected; ``fmt`` forces either or both
(``"csv"``, ``"alpaca"``, ``"tsv:classification"``). ``mapping`` renames source columns to the
schema's fields (``{"text": "body", "label": "queue"}``).

Every row becomes a :class:`Record` holding its number, its original bytes (for the rejects
file), the canonical example (or ``None``) and the problems found while reading it. Reading
never raises for bad rows; it raises :class:`DatasetError` only when the file as a whole
cannot be read or its format cannot be told.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tuneterm.core.datasets.containers import BOM, rows
from tuneterm.core.datasets.rules import Problem, problem
from tuneterm.core.datasets.schemas import (CLASSIFICATION_SYSTEM, CONVERTERS, EXTRACTION_SYSTEM, Reject, apply_mapping,
                                            extraction_object, from_dpo, label, sniff_schema)
from tuneterm.core.errors import DatasetError, NotFoundError

__all__ = ["Format", "Record", "detect", "detect_container", "iter_examples", "iter_records", "parse_format",
           "raw_header", "sniff_schema", "CLASSIFICATION_SYSTEM", "EXTRACTION_SYSTEM"]

SCHEMAS = ("chat", "dpo", "alpaca", "sharegpt", "prompt_completion", "classification", "extraction")
CONTAINERS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "hf")
ALIASES = {"openai": "chat", "messages": "chat", "preference": "dpo", "preferences": "dpo",
           "prompt-completion": "prompt_completion", "completion": "prompt_completion",
           "ndjson": "jsonl", "feather": "arrow", "datasets": "hf"}
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
               ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow"}
SNIFF_ROWS = 50


@dataclass(frozen=True)
class Format:
    container: str
    schema: str
    forced: bool = field(default=False, compare=False)  # the schema was given, not detected

    def __str__(self) -> str:
        return f"{self.container}:{self.schema}"


@dataclass
class Record:
    line: int
    raw: bytes
    example: dict | None
    problems: list[Problem] = field(default_factory=list)
    unit: str = "line"
    schema: str | None = None  # the row's own schema (chat or dpo after conversion)

    @property
    def ok(self) -> bool:
        return self.example is not None and not any(p.severity == "error" for p in self.problems)


# --- detection ------------------------------------------------------------------------------------


def parse_format(fmt: str | None) -> tuple[str | None, str | None]:
    """``"tsv:classification"`` -> ("tsv", "classification"); unknown names raise."""
    if not fmt:
        return None, None
    container = schema = None
    for part in fmt.replace("+", ":").split(":"):
        name = ALIASES.get(part.strip().lower(), part.strip().lower().replace("-", "_"))
        if name in CONTAINERS:
            container = name
        elif name in SCHEMAS:
            schema = name
        else:
            raise DatasetError(
                "unknown dataset format", [("format", fmt)],
                f"containers: {', '.join(CONTAINERS)}; schemas: {', '.join(SCHEMAS)} (e.g. csv:classification)",
            )
    return container, schema


def detect_container(path: Path) -> str:
    if path.is_dir():
        return "hf"
    ext = path.suffix.lower()
    if ext in _EXTENSIONS:
        if ext == ".json":
            with open(path, "rb") as fh:
                head = fh.read(4096).lstrip(BOM).lstrip()
            return "json" if head.startswith(b"[") else "jsonl"
        return _EXTENSIONS[ext]
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1"):
        return "arrow"
    stripped = head.lstrip(BOM).lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or not stripped:
        return "jsonl"
    first = head.split(b"\n", 1)[0]
    return "tsv" if b"\t" in first else "csv"


def detect(path: str | Path, fmt: str | None = None, mapping: dict | None = None) -> Format:
    path = _existing(path)
    forced_container, forced_schema = parse_format(fmt)
    container = forced_container or detect_container(path)
    if forced_schema:
        return Format(container, forced_schema, forced=True)
    votes: dict[str, int] = {}
    seen_keys: set[str] = set()
    for _num, _raw, row, _probs in rows(path, container):
        if row is None:
            continue
        row = apply_mapping(row, mapping)
        if isinstance(row, dict):
            seen_keys.update(map(str, row.keys()))
        schema = sniff_schema(row)
        if schema:
            votes[schema] = votes.get(schema, 0) + 1
        if sum(votes.values()) >= SNIFF_ROWS:
            break
    if not votes:
        if not seen_keys:  # nothing readable: let validation report why, line by line
            return Format(container, "chat")
        raise DatasetError(
            "cannot tell the dataset's format",
            [("file", str(path)), ("container", container), ("keys seen", ", ".join(sorted(seen_keys))[:300])],
            "pass --format (e.g. alpaca, sharegpt, classification) and --map FIELD=COLUMN for other column names",
        )
    return Format(container, max(votes, key=lambda s: votes[s]))


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFoundError("no such dataset file", [("path", str(p))],
                            "check the path, or see `tuneterm data ls` for imported datasets")
    if not os.access(p, os.R_OK):
        raise DatasetError("the dataset file is not readable", [("path", str(p))], "check its permissions")
    return p


def _prescan(path: Path, container: str, schema: str, mapping: dict | None) -> dict:
    """Classification needs every label, extraction every key, before the first row is written."""
    labels: set[str] = set()
    keys: dict[str, None] = {}
    for _n, _raw, row, _p in rows(path, container):
        row = apply_mapping(row, mapping)
        if not isinstance(row, dict) or "__header__" in row:
            continue
        try:
            if schema == "classification":
                labels.add(label(row))
            else:
                keys.update(dict.fromkeys(map(str, extraction_object(row))))
        except Reject:
            continue
    return {"labels": sorted(labels), "keys": list(keys)}


def iter_records(path: str | Path, fmt: str | Format | None = None, mapping: dict | None = None) -> Iterator[Record]:
    """Every row of the file as a :class:`Record`; bad rows carry problems instead of raising."""
    path = _existing(path)
    form = fmt if isinstance(fmt, Format) else detect(path, fmt, mapping)
    name = str(path)
    unit = {"jsonl": "line", "json": "item"}.get(form.container, "row")
    ctx = _prescan(path, form.container, form.schema, mapping) if form.schema in ("classification", "extraction") else {}
    forced = form.forced
    for num, raw, row, probs in rows(path, form.container):
        if isinstance(row, dict) and "__header__" in row:
            continue
        if row is None:
            yield Record(num, raw, None, probs, unit)
            continue
        rec = Record(num, raw, None, list(probs), unit)
        row = apply_mapping(row, mapping)
        if not isinstance(row, dict):
            rec.problems.append(problem(name, num, "data_type",
                                        f"the {unit} is a JSON {type(row).__name__}, not an object", unit=unit))
            yield rec
            continue
        own = form.schema if forced else (sniff_schema(row) or form.schema)
        if own != form.schema:
            rec.problems.append(problem(name, num, "mixed_formats",
                                        f"this {unit} is {own}, the file is {form.schema}", unit=unit))
        try:
            if own == "chat":
                rec.example, rec.schema = row, "chat"
            elif own == "dpo":
                rec.example, notes = from_dpo(row, ctx)
                rec.schema = "dpo"
                for legacy in notes:
                    rec.problems.append(problem(name, num, "preference_completion_spelling",
                                                f'"{legacy}" read as "{legacy.replace("completion", "output")}"',
                                                key=legacy, unit=unit))
            else:
                rec.example, rec.schema = CONVERTERS[own](row, ctx), "chat"
        except Reject as rej:
            rec.example = None
            rec.problems.append(problem(name, num, rej.kind, rej.message, key=rej.key, unit=unit))
        except Exception as exc:  # a shape no converter foresaw: a problem on its row, never a crash
            rec.example = None
            rec.problems.append(problem(name, num, "format_error", f"cannot convert this {unit} as {own}: "
                                        f"{type(exc).__name__}: {exc}", unit=unit))
        yield rec


def iter_examples(path: str | Path, fmt: str | None = None, mapping: dict | None = None) -> Iterator[dict]:
    """Canonical examples of a file, streamed; rows that cannot be read or converted are skipped."""
    for rec in iter_records(path, fmt, mapping):
        if rec.example is not None and not any(p.severity == "error" for p in rec.problems):
            yield rec.example


def raw_header(path: str | Path, fmt: Format) -> bytes | None:
    """The header line of a CSV/TSV file (kept at the top of a rejects file)."""
    if fmt.container not in ("csv", "tsv"):
        return None
    for _n, raw, row, _p in rows(Path(path), fmt.container):
        return raw if isinstance(row, dict) and "__header__" in row else None
    return None


def iter_chat_messages(path: str | Path) -> Iterator[tuple[int, list]]:
    """(line number, messages) of each row of a chat JSONL file; a row without a ``messages``
    list raises InputError naming the file, line and field. For the small files few-shot pools
    and classifier datasets are, where a bad row should stop the run, not be skipped."""
    from tuneterm.core.errors import InputError
    from tuneterm.core.jsonl import iter_jsonl

    for lineno, row in iter_jsonl(path, what="chat examples"):
        if not isinstance(row.get("messages"), list):
            raise InputError("not a chat example", [("file", str(path)), ("line", lineno), ("field", "messages")],
                             "each line is {\"messages\": [...]}")
        yield lineno, row["messages"]
