"""Turn what a person typed into a dataset file (torch-free; called from workers).

A workspace dataset name resolves through tuneterm.core.datasets.store (its train split when
it has splits); anything else must be an existing file.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.core.errors import NotFoundError


def dataset_names() -> list[str]:
    from tuneterm.core.datasets import store

    return sorted(record.name for record in store.list_datasets())


def resolve(text: str, split: str | None = "train") -> Path:
    text = (text or "").strip()
    if not text:
        raise NotFoundError("no dataset given", hint="type a workspace dataset name or a path to a .jsonl file")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    from tuneterm.core.datasets import store

    if split is not None:
        try:
            return Path(store.resolve_path(text, split))
        except NotFoundError:
            pass
    return Path(store.resolve_path(text, None))


MAX_PREVIEW_ROWS = 20_000


def read_records(path: Path, limit: int = MAX_PREVIEW_ROWS) -> tuple[list, bool]:
    """The file's rows as tuneterm.core.datasets.formats Records (bad rows included), and
    whether the file had more than ``limit`` rows."""
    from tuneterm.core.datasets.formats import iter_records

    out = []
    for rec in iter_records(path):
        if len(out) >= limit:
            return out, True
        out.append(rec)
    return out, False
