"""``tuneterm tui`` (also: ``tuneterm`` with no command) opens the Textual workbench."""

from __future__ import annotations

import argparse

ORDER = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the terminal workbench (the default)")
    p.set_defaults(func=open_tui)


def open_tui(args: argparse.Namespace) -> int:  # noqa: ARG001
    from tuneterm.tui.app import TunetermApp

    TunetermApp().run()
    return 0
