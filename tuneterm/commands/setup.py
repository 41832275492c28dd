"""``tuneterm setup``: prepare the workspace so the whole loop can be tried at once.

Creates the workspace, converts the embedded model once (about 20 s, cached) and imports
the sample datasets that are not in the workspace yet. Safe to run again: it skips what is
done. ``make run`` calls it before opening the TUI.
"""

from __future__ import annotations

import argparse
import sys

ORDER = 2



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="create the workspace, convert the embedded model, import sample data")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--no-model", action="store_true", help="skip converting the embedded model")
    p.add_argument("--no-samples", action="store_true", help="skip importing sample_data/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import modelref
    from tuneterm.core.workspace import workspace

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    ws = workspace()
    say(f"workspace: {ws.root}")
    if not args.no_model:
        gguf = modelref.embedded_gguf_path()
        if not modelref.is_converted(modelref.gguf_cache_dir(gguf, ws.models_dir)):
            print("converting the embedded model once (about 20 s)…", file=sys.stderr, flush=True)
            from tuneterm.workers.loading import ensure_converted

            ensure_converted(gguf, ws.models_dir)
        say("embedded model: ready")
    if not args.no_samples:
        for name in import_samples(ws):
            say(f"imported sample dataset {name}")
    return 0


def import_samples(ws) -> list[str]:  # noqa: ANN001
    """Import each ``sample_data/*/manifest``-listed dataset that the workspace lacks."""
    try:
        from tuneterm.core.datasets import store
    except ImportError:  # the datasets capability is not installed in this build
        return []
    from tuneterm.core.resources import sample_data_dir

    return store.import_samples(sample_data_dir())
