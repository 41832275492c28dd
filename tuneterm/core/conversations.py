"""Side-by-side chat conversations in the workspace DB (``conversations`` + ``chat_messages``).

A conversation has columns (one model each) that all received the same user messages; each
column has its own answers. Rows of ``chat_messages``: user messages have ``column_index``
NULL (shared), answers carry their column and model. The system prompt and generation
settings live in ``conversations.settings``: ``{"system": ..., "params": {...},
"columns": [{"system": ..., "params": {...}, "trained_system": ..., "trained_by": JOB}, ...]}``
(per-column overrides; ``trained_system`` is the prompt the column's job was trained with, used
when neither the column nor the conversation has one).

Exports: JSONL (one canonical ``{"messages": [...]}`` line per column) and Markdown. A turn
can become a training example in a dataset (the chosen column's answer or an edited one).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tuneterm.core.errors import InputError, NotFoundError


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Message:
    turn: int
    role: str  # user | assistant
    content: str
    column: int | None = None  # None: shared by every column (user messages)
    model: str | None = None
    stats: dict = field(default_factory=dict)
    created_at: str = field(default_factory=_now)


@dataclass
class Conversation:
    models: list[str]
    settings: dict = field(default_factory=dict)
    title: str = ""
    messages: list[Message] = field(default_factory=list)
    id: int | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    # --- building ---------------------------------------------------------------------------

    @property
    def n_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")

    def add_user(self, text: str) -> int:
        turn = self.n_turns
        self.messages.append(Message(turn, "user", text))
        if not self.title:
            self.title = " ".join(text.split())[:60]
        return turn

    def set_answer(self, turn: int, column: int, content: str, model: str | None = None,
                   stats: dict | None = None) -> None:
        """Record (or replace) column ``column``'s answer to turn ``turn``."""
        self.messages = [m for m in self.messages
                         if not (m.role == "assistant" and m.turn == turn and m.column == column)]
        self.messages.append(Message(turn, "assistant", content, column,
                                     model or self.model_of(column), dict(stats or {})))
        self.messages.sort(key=lambda m: (m.turn, m.role != "user", m.column or 0))

    def remove_column(self, column: int) -> None:
        """Drop a column: its model, its answers and its overrides; later columns shift left."""
        if not 0 <= column < len(self.models):
            raise InputError("no such column", [("column", str(column + 1)), ("columns", str(len(self.models)))])
        self.models.pop(column)
        kept = []
        for m in self.messages:
            if m.column == column:
                continue
            if m.column is not None and m.column > column:
                m.column -= 1
            kept.append(m)
        self.messages = kept
        cols = self.settings.get("columns")
        if isinstance(cols, list) and column < len(cols):
            cols.pop(column)

    def set_column_settings(self, column: int, system: str | None, params: dict) -> None:
        cols = self.settings.setdefault("columns", [])
        while len(cols) <= column:
            cols.append({})
        trained = {k: v for k, v in (cols[column] or {}).items() if k in ("trained_system", "trained_by")}
        cols[column] = {"system": system or None, "params": dict(params), **trained}

    def set_trained_system(self, column: int, text: str | None, job_id: str | None = None) -> None:
        """The system prompt column ``column``'s model was trained with (None: none); used when neither
        the column nor the conversation has a system prompt of its own."""
        cols = self.settings.setdefault("columns", [])
        while len(cols) <= column:
            cols.append({})
        own = dict(cols[column] or {})
        own.pop("trained_system", None)
        own.pop("trained_by", None)
        if text:
            own.update(trained_system=text, trained_by=job_id)
        cols[column] = own

    def model_of(self, column: int) -> str | None:
        return self.models[column] if 0 <= column < len(self.models) else None

    def answer(self, turn: int, column: int) -> Message | None:
        for m in self.messages:
            if m.role == "assistant" and m.turn == turn and m.column == column:
                return m
        return None

    def user_message(self, turn: int) -> Message:
        for m in self.messages:
            if m.role == "user" and m.turn == turn:
                return m
        raise NotFoundError(f"the conversation has no turn {turn}", [("turns", str(self.n_turns))])

    def system_for(self, column: int) -> str:
        """The column's own system prompt, else the conversation's, else the one its model was trained with."""
        cols = self.settings.get("columns") or []
        col = cols[column] if column < len(cols) and isinstance(cols[column], dict) else {}
        return col.get("system") or self.settings.get("system") or col.get("trained_system") or ""

    def params_for(self, column: int) -> dict:
        cols = self.settings.get("columns") or []
        own = cols[column].get("params") if column < len(cols) and isinstance(cols[column], dict) else None
        return {**(self.settings.get("params") or {}), **(own or {})}

    def history(self, column: int, upto: int | None = None) -> list[dict]:
        """The messages column ``column`` has seen: its system prompt, the shared user turns and
        its own answers (turns before ``upto``, when given)."""
        out: list[dict] = []
        system = self.system_for(column)
        if system:
            out.append({"role": "system", "content": system})
        for m in self.messages:
            if upto is not None and m.turn >= upto:
                continue
            if m.role == "user" or m.column == column:
                out.append({"role": m.role, "content": m.content})
        return out


# --- the database -----------------------------------------------------------------------------


def _connect():
    from tuneterm.core import db

    return db.connect()


def save(conv: Conversation) -> int:
    """Insert or update ``conv`` with all its messages; returns its id."""
    conv.updated_at = _now()
    with _connect() as conn:
        if conv.id is None:
            cur = conn.execute(
                "INSERT INTO conversations (title, models, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (conv.title or "untitled", json.dumps(conv.models), json.dumps(conv.settings),
                 conv.created_at, conv.updated_at))
            conv.id = int(cur.lastrowid)
        else:
            cur = conn.execute("UPDATE conversations SET title = ?, models = ?, settings = ?, updated_at = ? WHERE id = ?",
                               (conv.title or "untitled", json.dumps(conv.models), json.dumps(conv.settings),
                                conv.updated_at, conv.id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no conversation {conv.id}", hint="it may have been deleted; save it as a new one")
            conn.execute("DELETE FROM chat_messages WHERE conversation_id = ?", (conv.id,))
        conn.executemany(
            "INSERT INTO chat_messages (conversation_id, turn, column_index, model, role, content, stats, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(conv.id, m.turn, m.column, m.model, m.role, m.content, json.dumps(m.stats), m.created_at)
             for m in conv.messages])
    return conv.id


@dataclass
class Summary:
    id: int
    title: str
    models: list[str]
    n_turns: int
    updated_at: str


def list_conversations(limit: int = 200) -> list[Summary]:
    with _connect() as conn:
        rows = conn.execute(
            "SELECT c.id, c.title, c.models, c.updated_at, "
            "(SELECT COUNT(*) FROM chat_messages m WHERE m.conversation_id = c.id AND m.role = 'user') AS n "
            "FROM conversations c ORDER BY c.updated_at DESC, c.id DESC LIMIT ?", (limit,)).fetchall()
    return [Summary(r["id"], r["title"], json.loads(r["models"] or "[]"), r["n"], r["updated_at"]) for r in rows]


def load(conversation_id: int) -> Conversation:
    with _connect() as conn:
        row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation {conversation_id}", hint="list them with conversations.list_conversations()")
        msgs = conn.execute("SELECT * FROM chat_messages WHERE conversation_id = ? ORDER BY turn, id",
                            (conversation_id,)).fetchall()
    conv = Conversation(json.loads(row["models"] or "[]"), json.loads(row["settings"] or "{}"), row["title"],
                        id=row["id"], created_at=row["created_at"], updated_at=row["updated_at"])
    conv.messages = [Message(m["turn"], m["role"], m["content"], m["column_index"], m["model"],
                             json.loads(m["stats"] or "{}"), m["created_at"]) for m in msgs]
    return conv


def delete(conversation_id: int) -> None:
    with _connect() as conn:
        conn.execute("DELETE FROM chat_messages WHERE conversation_id = ?", (conversation_id,))
        if conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount == 0:
            raise NotFoundError(f"no conversation {conversation_id}")


# --- exports ----------------------------------------------------------------------------------


def to_jsonl(conv: Conversation, column: int | None = None) -> str:
    """One canonical ``{"messages": [...]}`` line per column (or only ``column``)."""
    cols = range(len(conv.models)) if column is None else [column]
    return "".join(json.dumps({"messages": conv.history(c)}, ensure_ascii=False) + "\n" for c in cols)


def to_markdown(conv: Conversation) -> str:
    lines = [f"# {conv.title or 'conversation'}", ""]
    lines.append("Models: " + ", ".join(f"`{m}`" for m in conv.models))
    if conv.settings.get("system"):
        lines += ["", f"**System:** {conv.settings['system']}"]
    if conv.settings.get("params"):
        lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(conv.settings["params"].items()))]
    for turn in range(conv.n_turns):
        lines += ["", f"## Turn {turn + 1}", "", "**User:**", "", conv.user_message(turn).content]
        for col, model in enumerate(conv.models):
            ans = conv.answer(turn, col)
            if ans is None:
                continue
            timing = ""
            if ans.stats.get("ttft_ms") is not None:
                timing = (f" — {ans.stats.get('completion_tokens', '?')} tokens, ttft {ans.stats['ttft_ms']:.0f} ms, "
                          f"{ans.stats.get('tokens_per_s', 0):.1f} tok/s")
            lines += ["", f"**{ans.model or model}**{timing}:", "", ans.content]
    return "\n".join(lines) + "\n"


def export(conv: Conversation, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``conv`` as JSONL or Markdown (chosen by ``fmt`` or the file's suffix)."""
    from tuneterm.core.fsutil import atomic_write_text

    path = Path(path).expanduser()
    fmt = fmt or ("md" if path.suffix.lower() in (".md", ".markdown") else "jsonl")
    if fmt not in ("jsonl", "md"):
        raise InputError("unknown export format", [("format", fmt)], "use jsonl or md")
    atomic_write_text(path, to_markdown(conv) if fmt == "md" else to_jsonl(conv))
    return path


# --- a turn as a training example -------------------------------------------------------------


def turn_example(conv: Conversation, turn: int, column: int, edited: str | None = None) -> dict:
    """The canonical example for turn ``turn``: the column's history, the user message and the
    column's answer (or ``edited`` in its place)."""
    if edited is None:
        ans = conv.answer(turn, column)
        if ans is None:
            raise NotFoundError(f"column {column + 1} has no answer to turn {turn + 1}",
                                hint="wait for the answer, or pass an edited one")
        edited = ans.content
    if not edited.strip():
        raise InputError("the answer is empty", [("turn", str(turn + 1)), ("column", str(column + 1))],
                         "an empty assistant message would teach the model to say nothing")
    messages = conv.history(column, upto=turn)
    messages.append({"role": "user", "content": conv.user_message(turn).content})
    messages.append({"role": "assistant", "content": edited})
    return {"messages": messages}


def save_turn_to_dataset(conv: Conversation, turn: int, column: int, target: str,
                         edited: str | None = None) -> Path:
    """Append the turn's example to ``target``: a workspace dataset name (its train split when
    it has splits; a new dataset when no dataset or file has that name) or a JSONL file path."""
    example = turn_example(conv, turn, column, edited)
    return append_example(example, target)


def append_example(example: dict, target: str) -> Path:
    line = json.dumps(example, ensure_ascii=False) + "\n"
    looks_like_path = "/" in target or target.endswith(".jsonl") or Path(target).expanduser().exists()
    store = None
    if not looks_like_path:
        try:
            from tuneterm.core.datasets import store  # the datasets part; optional in this build
        except ImportError:
            store = None
    if store is None:
        return _append_line(Path(target).expanduser(), line)
    if hasattr(store, "append_examples"):
        store.append_examples(target, [example])
        return store.resolve_path(target)
    with tempfile.TemporaryDirectory(prefix="tuneterm-turn-") as tmp:
        if store.exists(target):
            # Rebuild the dataset through its importer, so counts, hashes and validation stay right.
            rec = store.get(target)
            parts = {s: rec.file(s) for s in rec.splits} if rec.splits else {None: rec.file(None)}
            first = "train" if "train" in parts else next(iter(parts))
            staged = Path(tmp) / target
            staged.mkdir()
            for split, src in parts.items():
                text = src.read_text(encoding="utf-8")
                if text and not text.endswith("\n"):
                    text += "\n"
                if split == first:
                    text += line
                (staged / f"{split or 'data'}.jsonl").write_text(text, encoding="utf-8")
            source = staged if rec.splits else staged / "data.jsonl"
            store.import_dataset(source, name=target, replace=True)
        else:
            source = Path(tmp) / f"{target}.jsonl"
            source.write_text(line, encoding="utf-8")
            store.import_dataset(source, name=target)
    return store.resolve_path(target)


def _append_line(path: Path, line: str) -> Path:
    from tuneterm.core.fsutil import atomic_write_text

    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    atomic_write_text(path, existing + line)
    return path
