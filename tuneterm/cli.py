"""The command line: ``tuneterm <command> ...``; with no command it opens the TUI.

Each command lives in ``tuneterm/commands/<name>.py`` with ``register(subparsers)``; this
module discovers them, so adding a command never edits this file. Only light modules are
imported here: ``tuneterm --help`` must not load torch & co. (a test checks it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from tuneterm import __version__
from tuneterm.core import quiet
from tuneterm.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, TunetermError

EPILOG = """\
exit codes: 0 ok, 1 problems found (e.g. validation errors), 2 usage, 3 bad input,
            4 not found, 5 runtime failure (model, network, API, disk), 130 interrupted
workspace:  $TUNETERM_HOME (see `tuneterm doctor`)
"""


def _command_modules() -> list:
    import tuneterm.commands as pkg

    modules = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"tuneterm.commands.{info.name}"))
    modules.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    return modules


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors use our usage exit code
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tuneterm",
        description="A terminal workbench for fine-tuning LLMs. Run with no command to open the TUI.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tuneterm {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show the libraries' own warnings too (also in job logs; same as TUNETERM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        module.register(sub)
    return parser


def _late_positionals(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """argparse fills optional positionals (``chat MODEL [PROMPT]``) only from the words before the first option,
    so ``chat MODEL --system S "PROMPT"`` left PROMPT over; a word left over goes to the first empty one."""
    empty = [name for name in ("prompt", "model") if getattr(args, "command", None) == "chat" and getattr(args, name) is None]
    if extra and len(extra) <= len(empty) and not any(word.startswith("-") for word in extra):
        for name, word in zip(sorted(empty, key=("model", "prompt").index), extra):
            setattr(args, name, word)
        return
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    _late_positionals(parser, args, extra)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parse_command_line(parser, argv)
    quiet.install(args.verbose or None)  # before any command imports torch & co.
    func = getattr(args, "func", None)
    if func is None:
        if args.command:  # a command group without its subcommand
            parser.parse_args([args.command, "--help"])
        from tuneterm.commands.tui import open_tui

        func = open_tui
    try:
        return int(func(args) or 0)
    except TunetermError as err:
        sys.stdout.flush()
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
