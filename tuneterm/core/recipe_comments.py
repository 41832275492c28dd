"""The comments of a commented recipe file: the header, and one line of help per setting.

    [train]
    lr = 3e-4        # LoRA tolerates high rates; lower it if the loss jumps

gives ``{"train.lr": "LoRA tolerates high rates; lower it if the loss jumps"}``.
"""

from __future__ import annotations

import re
from pathlib import Path

SECTION = re.compile(r"^\s*\[([A-Za-z0-9_.\-]+)\]\s*(#.*)?$")
SETTING = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=.*?#\s*(.+)$")


def read_comments(path: Path) -> tuple[str, dict[str, str]]:
    """(header text, key -> comment) of a recipe file."""
    header: list[str] = []
    comments: dict[str, str] = {}
    section = ""
    in_header = True
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if in_header and stripped.startswith("#"):
            header.append(stripped.lstrip("#").rstrip())
            continue
        if stripped:
            in_header = False
        match = SECTION.match(line)
        if match:
            section = match.group(1)
            continue
        match = SETTING.match(line)
        if match and not stripped.startswith("#"):
            key = f"{section}.{match.group(1)}" if section else match.group(1)
            comments[key] = match.group(2).strip()
    return "\n".join(header).strip(), comments
