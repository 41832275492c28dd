"""Remapped keys from the settings file: a ``[keymap]`` table of binding id -> keys.

    [keymap]
    "quit" = "ctrl+q"
    "jobs.cancel" = "x"

The ids are the ones docs/workbench.md lists (and the command palette shows). Read in a worker:
the settings module pulls in pydantic.
"""

from __future__ import annotations

import tomllib


def user_keymap() -> dict[str, str]:
    from tuneterm.core.settings import config_path

    path = config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    table = data.get("keymap")
    if not isinstance(table, dict):
        return {}
    return {str(k): str(v) for k, v in table.items() if isinstance(v, str) and v.strip()}
