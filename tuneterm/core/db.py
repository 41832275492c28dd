"""The workspace database: SQLite in WAL mode, migrations keyed on ``PRAGMA user_version``.

Open it with :func:`connect` (a context manager); keep transactions short so that the TUI,
the CLI and job processes can share it. To change the schema, append a migration to
``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tuneterm.core.errors import RuntimeFailure

# Each entry brings the schema from version i to i+1.
MIGRATIONS: list[str] = [
    # 1: datasets, OpenAI jobs, chat conversations, eval runs
    """
    CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        source_path TEXT NOT NULL,
        source_format TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        n_examples INTEGER NOT NULL,
        n_rejected INTEGER NOT NULL DEFAULT 0,
        splits TEXT NOT NULL DEFAULT '{}',
        meta TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE openai_jobs (
        id TEXT PRIMARY KEY,
        base_url TEXT NOT NULL,
        model TEXT NOT NULL,
        dataset TEXT,
        training_file TEXT,
        validation_file TEXT,
        status TEXT NOT NULL,
        fine_tuned_model TEXT,
        estimated_cost_usd REAL,
        trained_tokens INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        raw TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        models TEXT NOT NULL DEFAULT '[]',
        settings TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE chat_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        turn INTEGER NOT NULL,
        column_index INTEGER,
        model TEXT,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        stats TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE eval_runs (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        models TEXT NOT NULL,
        out_dir TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 2: blind-comparison votes and judge verdicts (tuneterm.core.votes)
    """
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        round_id TEXT NOT NULL,
        voter TEXT NOT NULL,
        prompt TEXT NOT NULL,
        messages TEXT NOT NULL DEFAULT '[]',
        variants TEXT NOT NULL,
        answers TEXT NOT NULL,
        shuffle TEXT NOT NULL DEFAULT '[]',
        outcome TEXT NOT NULL,
        winner TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        detail TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX votes_round ON votes(round_id)
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeFailure(
            "the workspace database is newer than this tuneterm",
            [("database", str(path)), ("schema", str(version)), ("supported", str(SCHEMA_VERSION))],
            "upgrade tuneterm, or point TUNETERM_HOME at another workspace",
        )
    if version == SCHEMA_VERSION:
        return
    # BEGIN IMMEDIATE takes the write lock, so two processes never migrate at once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {i + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def connect(path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """A connection to the workspace DB, migrated; commits on success, rolls back on error."""
    if path is None:
        from tuneterm.core.workspace import workspace

        path = workspace().db_path
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise RuntimeFailure(
            "cannot open the workspace database", [("path", str(path)), ("problem", str(exc))]
        ) from exc
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path)
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise RuntimeFailure(
            "the workspace database is damaged or locked",
            [("path", str(path)), ("problem", str(exc))],
            "close other tuneterm processes; if it stays, move the file away (datasets and jobs stay on disk)",
        ) from exc
    finally:
        conn.close()
