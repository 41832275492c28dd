"""The process behind a workspace's shared chat server (tuneterm.core.shared_servers):
``tuneterm serve REFS`` on 127.0.0.1, plus a watchdog that stops it (SIGTERM, a clean stop of the
serve command) once no live process holds a lease, and removes its registry entry on the way out.

    python -m tuneterm.workers.shared_serve --leases DIR --entry FILE --port P -- REF [REF ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

GRACE_S = 1.0  # no live lease for this long: stop
POLL_S = 0.25


def _watch(leases: Path, stop: threading.Event) -> None:
    from tuneterm.core.shared_servers import live_leases

    empty_since = None
    while not stop.wait(POLL_S):
        if live_leases(leases):
            empty_since = None
            continue
        empty_since = empty_since or time.monotonic()
        if time.monotonic() - empty_since >= GRACE_S:
            print("tuneterm shared serve: no tab uses this server any more; stopping", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tuneterm.workers.shared_serve")
    ap.add_argument("--leases", required=True, type=Path)
    ap.add_argument("--entry", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("refs", nargs="+")
    args = ap.parse_args(argv)
    stop = threading.Event()
    threading.Thread(target=_watch, args=(args.leases, stop), name="tuneterm-lease-watch", daemon=True).start()
    from tuneterm.cli import main as cli_main

    try:
        return cli_main(["serve", *args.refs, "--host", "127.0.0.1", "--port", str(args.port)])
    finally:
        stop.set()
        try:
            import json

            if json.loads(args.entry.read_text()).get("pid") == os.getpid():
                args.entry.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
