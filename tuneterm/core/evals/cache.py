"""Per-item result cache in SQLite (``<workspace>/evals/cache.sqlite``).

The key is a content hash of everything that could change the answer: the variant's
fingerprint (weights, adapter, quant config, tokenizer, chat template), the task's name and
version, the item id, the exact prompt and the generation settings. lm-eval's cache leaves
the model out of its key (#2715); this one cannot. Rows are committed per batch, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    variant TEXT NOT NULL,
    item_id TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def content_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(SCHEMA)
        self._conn.commit()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            for key, value in self._conn.execute(q, chunk):
                out[key] = json.loads(value)
        return out

    def put_many(self, rows: list[tuple[str, str, str, str, dict]]) -> None:
        """rows: (key, task, variant, item_id, value); committed together."""
        now = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO results (key, task, variant, item_id, value, created) VALUES (?,?,?,?,?,?)",
                [(k, t, v, i, json.dumps(val, ensure_ascii=False), now) for k, t, v, i, val in rows],
            )

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
