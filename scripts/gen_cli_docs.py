"""Write docs/cli.md, the command-line reference, from tuneterm's own argument parser.

    .venv/bin/python scripts/gen_cli_docs.py           # rewrites docs/cli.md
    .venv/bin/python scripts/gen_cli_docs.py --check   # exit 1 when docs/cli.md is out of date

Every command and subcommand gets a section with its ``--help`` text, formatted at a fixed width so
the file does not depend on the terminal. tests/test_cli_docs.py fails when the committed file
differs from what this writes, so a new option cannot be left out of the reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "cli.md"
WIDTH = "100"

HEADER = """\
# Command-line reference

Generated from tuneterm's argument parser by `scripts/gen_cli_docs.py`; do not edit by hand
(`tests/test_cli_docs.py` fails when this page and the parser disagree). Every command exits with
the codes in [Exit codes and troubleshooting](troubleshooting.md). The guide pages explain what the
options are for.

"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """The subparsers of one parser, in registration order, without aliases."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found.append((name, sub))
    return found


def _sections(parser: argparse.ArgumentParser, depth: int = 2) -> list[str]:
    out = [f"{'#' * depth} `{parser.prog}`\n", "```text", parser.format_help().rstrip(), "```\n"]
    for _, sub in _subcommands(parser):
        out.extend(_sections(sub, min(depth + 1, 4)))
    return out


def render() -> str:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tuneterm.cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps at the terminal's width; the file must not
    try:
        parser = build_parser()
        commands = [name for name, _ in _subcommands(parser)]
        index = "Commands: " + ", ".join(f"[`{name}`](#tuneterm-{name})" for name in commands) + ".\n"
        return HEADER + index + "\n" + "\n".join(_sections(parser)) + "\n"
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: run .venv/bin/python scripts/gen_cli_docs.py",
                  file=sys.stderr)
            return 1
        print(f"{TARGET.relative_to(REPO)} is up to date")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
