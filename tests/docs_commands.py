"""The commands the documentation shows, read from its Markdown.

Convention (docs/index.md says it too): a fenced block tagged ``console`` holds commands to run,
each on a line beginning ``$ `` (a line ending in a backslash continues on the next); the other
lines are output, shown and not checked, except after ``$ echo $?``: that line is the exit code
the command before it must return (0 otherwise). Blocks tagged ``text`` (or anything else) are
shown, never run. tests/test_docs_commands.py runs every page's commands; tests/test_wheel_install.py
walks README's "A first session" from an installed wheel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Command:
    page: str        # path relative to the repository, e.g. "docs/datasets.md"
    line: int        # 1-based line of the `$ ` line
    section: str     # the heading the block sits under
    command: str     # without the `$ `, continuation lines joined
    expected_exit: int = 0

    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.section}): $ {self.command}"


class DocsFormatError(ValueError):
    pass


def pages() -> list[Path]:
    """README.md and every page of the docs site, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def console_commands(path: Path, text: str | None = None) -> list[Command]:
    """Every `$ ` command of the page's ``console`` blocks, in document order."""
    text = path.read_text() if text is None else text
    page = _relative(path)
    commands: list[Command] = []
    section = ""
    fence: str | None = None   # the opening fence while inside a block
    running = False            # inside a console block
    pending: list[str] | None = None   # a command continued with a trailing backslash
    start = 0
    waiting_exit: int | None = None    # line of an `echo $?` whose output is next
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, running = match.group(2), match.group(3) == "console"
                continue
            heading = HEADING.match(line)
            if heading:
                section = heading.group(2).strip()
            continue
        if match and match.group(2).startswith(fence) and not match.group(3):  # the closing fence
            if pending is not None:
                raise DocsFormatError(f"{page}:{start}: the command's last line ends in a backslash")
            if waiting_exit is not None:
                raise DocsFormatError(f"{page}:{waiting_exit}: `$ echo $?` needs the exit code on the next line")
            fence, running = None, False
            continue
        if not running:
            continue
        content = line.strip()
        if pending is not None:
            pending.append(content.removesuffix("\\").rstrip())
            if not content.endswith("\\"):
                commands.append(Command(page, start, section, " ".join(pending)))
                pending = None
            continue
        if waiting_exit is not None:
            if not content.isdigit():
                raise DocsFormatError(f"{page}:{number}: expected the exit code after `$ echo $?`, found {content!r}")
            last = commands[-1]
            commands[-1] = Command(last.page, last.line, last.section, last.command, int(content))
            waiting_exit = None
            continue
        if not content.startswith("$ "):
            continue  # output
        command = content[2:].strip()
        if command == "echo $?":
            if not commands or commands[-1].page != page:
                raise DocsFormatError(f"{page}:{number}: `$ echo $?` with no command before it")
            waiting_exit = number
            continue
        if command.endswith("\\"):
            pending, start = [command.removesuffix("\\").rstrip()], number
            continue
        commands.append(Command(page, number, section, command))
    if fence is not None:
        raise DocsFormatError(f"{page}: a code block opened with {fence} is never closed")
    return commands


def console_blocks_without_commands(path: Path) -> list[int]:
    """Lines of ``console`` blocks with no `$ ` line (likely a mistagged ``text`` block)."""
    lines = path.read_text().splitlines()
    found, start, has_command, fence = [], 0, False, None
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if fence is None:
            if match and match.group(3) == "console":
                fence, start, has_command = match.group(2), number, False
            elif match:
                fence, start, has_command = match.group(2), number, True  # not a console block
            continue
        if match and match.group(2).startswith(fence) and not match.group(3):
            if not has_command:
                found.append(start)
            fence = None
            continue
        has_command = has_command or line.strip().startswith("$ ")
    return found


def section_commands(path: Path, section: str) -> list[Command]:
    """The commands under one heading of a page (README's "A first session")."""
    return [c for c in console_commands(path) if c.section == section]


def shown_commands(path: Path) -> list[Command]:
    """`tuneterm ...` lines of the blocks that are shown, not run (``text`` and others), without
    synopses (lines with `...`, `[`, `|` or a placeholder in capitals are not one command)."""
    page = _relative(path)
    found: list[Command] = []
    if page == "docs/cli.md":  # the parser's own help text
        return found
    section, fence, running = "", None, False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, running = match.group(2), match.group(3) == "console"
            elif HEADING.match(line):
                section = HEADING.match(line).group(2).strip()
            continue
        if match and match.group(2).startswith(fence) and not match.group(3):
            fence = None
            continue
        content = line.strip().removeprefix("$ ")
        if running or not content.startswith("tuneterm ") or content.endswith("\\"):
            continue
        for command in re.split(r"\s*(?:;|&&)\s*(?=tuneterm )", content):  # `a; b` is two commands
            if not re.search(r"\.\.\.|\[|\||\bREF\b|\bPATH\b|\bNAME\b|\bFILE\b|\bOP\b", command.split(" #", 1)[0]):
                found.append(Command(page, number, section, command))
    return found
