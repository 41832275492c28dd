"""One reader for JSON Lines files (torch-free): every non-blank line is one JSON value, and a bad
line stops the read with a :class:`DatasetError` that names the file and the line, never a
traceback. For the tolerant, row-by-row reading that collects problems instead (``data import``,
``data validate``), see tuneterm.core.datasets.formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from tuneterm.core.errors import DatasetError


def iter_jsonl(path: str | Path, *, objects: bool = True, what: str = "data") -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line. ``objects``: each value must be a JSON object.
    ``what`` names the file in errors ("data", "held-out data", "eval samples"...)."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"a line of the {what} is not valid JSON",
                                   [("file", str(path)), ("line", str(number)), ("problem", exc.msg)],
                                   "fix or remove the line") from None
            if objects and not isinstance(value, dict):
                raise DatasetError(f"a line of the {what} is not a JSON object",
                                   [("file", str(path)), ("line", str(number)), ("got", type(value).__name__)],
                                   "each line holds one object, e.g. {\"messages\": [...]}")
            yield number, value


def read_jsonl(path: str | Path, *, objects: bool = True, what: str = "data") -> list:
    """Every value of the file, in order (see :func:`iter_jsonl`)."""
    return [value for _, value in iter_jsonl(path, objects=objects, what=what)]
