"""Completion for inputs: file-system paths, and workspace dataset names plus paths.

Listing a folder runs in a thread (``asyncio.to_thread``): a slow or network file system
must not freeze typing.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from textual.suggester import Suggester


def complete_path(value: str, suffixes: tuple[str, ...] = ()) -> str | None:
    """The first entry of the folder that ``value`` is in whose name starts with what follows.

    Folders complete with a trailing slash; files only if their suffix is in ``suffixes`` (any,
    when empty). Hidden entries are offered only when the typed name starts with a dot.
    """
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, prefix = os.path.split(expanded)
    try:
        entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or name == prefix and not entry.is_dir():
            continue
        if name.startswith(".") and not prefix.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if not is_dir and suffixes and not name.lower().endswith(suffixes):
            continue
        completed = os.path.join(folder, name) + ("/" if is_dir else "")
        if completed == expanded:
            continue
        # Keep the user's own spelling of the start (e.g. "~/").
        return value + completed[len(expanded):]
    return None


class PathSuggester(Suggester):
    def __init__(self, suffixes: tuple[str, ...] = ()) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.suffixes = suffixes

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value, self.suffixes)


class DatasetSuggester(PathSuggester):
    """Workspace dataset names first, then file paths."""

    def __init__(self, suffixes: tuple[str, ...] = ()) -> None:
        super().__init__(suffixes)
        self.names: list[str] = []

    async def get_suggestion(self, value: str) -> str | None:
        if value and "/" not in value and not value.startswith((".", "~")):
            for name in self.names:
                if name.startswith(value) and name != value:
                    return name
        return await super().get_suggestion(value)


def looks_like_path(text: str) -> bool:
    return "/" in text or text.startswith((".", "~")) or Path(text).suffix in (".jsonl", ".json", ".csv", ".parquet")
