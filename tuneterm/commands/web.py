"""``tuneterm web [--host H] [--port P] [--screen S]``: the workbench in a browser (textual-serve).

textual-serve starts one ``tuneterm tui`` process per browser tab and relays its terminal over a
websocket. It binds to 127.0.0.1 by default: whoever reaches the page drives the workbench
(launches jobs, reads datasets), and there is no login, so another host is opt-in, with a warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys

ORDER = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the workbench to a browser (textual-serve), on 127.0.0.1 by default",
        description="Serve the same Textual workbench to a web browser. Each browser tab gets its own "
                    "`tuneterm tui` process. Bound to 127.0.0.1 unless --host says otherwise "
                    "(there is no login: use an SSH tunnel, e.g. ssh -L 8000:127.0.0.1:8000 HOST).",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="the URL the browser uses, when it differs (a tunnel or a proxy)")
    p.add_argument("--screen", default=None, metavar="SCREEN",
                   help="screen to open first: datasets, cost, train, jobs, quantize, evals, chat")
    p.set_defaults(func=run)


def app_command(screen: str | None = None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    parts = [sys.executable, "-m", "tuneterm", "tui"]
    if screen:
        parts += ["--screen", screen]
    return shlex.join(parts)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, public_url: str | None = None,
                screen: str | None = None):
    """A textual-serve Server for the workbench (not started)."""
    from tuneterm.core.errors import RuntimeFailure, UsageError

    if not 0 < port < 65536:
        raise UsageError("the port must be 1-65535", [("--port", str(port))])
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise RuntimeFailure("textual-serve is not installed", [("import", str(exc))],
                             "pip install textual-serve (it is a dependency of tuneterm)") from exc
    return Server(app_command(screen), host=host, port=port, title="tuneterm", public_url=public_url)


def run(args: argparse.Namespace) -> int:
    from tuneterm.tui.navigation import BY_MODE

    if args.screen and args.screen not in BY_MODE:
        from tuneterm.core.errors import UsageError

        raise UsageError(f"unknown screen {args.screen!r}", [("--screen", args.screen)],
                         "one of " + ", ".join(BY_MODE))
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who reaches this address drives the workbench "
              "(no login). Prefer 127.0.0.1 and an SSH tunnel.", file=sys.stderr)
    server = make_server(args.host, args.port, args.public_url, args.screen)
    server.serve()
    return 0
