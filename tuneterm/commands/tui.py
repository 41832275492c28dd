"""``tuneterm tui [--screen S]`` (also: ``tuneterm`` with no command) opens the Textual workbench."""

from __future__ import annotations

import argparse

ORDER = 1
SCREENS = ("datasets", "cost", "train", "jobs", "quantize", "evals", "chat")  # tuneterm.tui.navigation.PLACES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the terminal workbench (the default)")
    p.add_argument("--screen", choices=SCREENS, default=None, help="the screen to open first (default: the start_screen setting: Datasets "
                        "while no tuned job has finished, Chat after)")
    p.set_defaults(func=open_tui)


def open_tui(args: argparse.Namespace) -> int:
    from tuneterm.tui.app import TunetermApp

    TunetermApp(start=getattr(args, "screen", None) or "auto").run()
    return 0
