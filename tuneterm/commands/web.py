"""``tuneterm web [--host H] [--port P] [--token T] [--public-url URL] [--screen S]``: the workbench
in a browser.

Each browser tab gets its own ``tuneterm tui`` process (textual-serve relays its terminal over a
websocket). Whoever drives the page launches jobs and reads datasets, so every launch has a token:
the printed URL carries it once, then a cookie does; the websocket checks its Origin and, on
127.0.0.1, the Host header (``tuneterm.web.guard``). Bound to 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import os
import sys

from tuneterm.web.guard import TOKEN_ENV, is_loopback, new_token

ORDER = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the workbench to a browser, on 127.0.0.1 with a token by default",
        description="Serve the same Textual workbench to a web browser. Each browser tab gets its own "
                    "`tuneterm tui` process. Open the printed URL: it carries this launch's token "
                    "(then a cookie does). Bound to 127.0.0.1 unless --host says otherwise; from "
                    "another machine prefer an SSH tunnel: ssh -L 8000:127.0.0.1:8000 HOST.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port, 0 for a free one (default {DEFAULT_PORT})")
    p.add_argument("--token", default=None,
                   help=f"the access token (default: ${TOKEN_ENV}, else a new random one per launch)")
    p.add_argument("--no-token", action="store_true",
                   help="no token (only on a loopback address; Origin and Host are still checked)")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="the URL the browser uses, when it differs (a tunnel or a proxy)")
    p.add_argument("--screen", default=None, metavar="SCREEN",
                   help="screen to open first: datasets, cost, train, jobs, quantize, evals, chat")
    p.set_defaults(func=run)


def app_argv(screen: str | None = None) -> list[str]:
    """The command run for each browser tab."""
    argv = [sys.executable, "-m", "tuneterm", "tui"]
    if screen:
        argv += ["--screen", screen]
    return argv


def resolve_token(args: argparse.Namespace) -> str | None:
    from tuneterm.core.errors import UsageError

    if args.no_token:
        if not is_loopback(args.host):
            raise UsageError(f"--no-token is refused on {args.host}", [("--host", args.host)],
                             "anyone who reaches this address would drive the workbench; keep the token, "
                             "or bind to 127.0.0.1 and use an SSH tunnel")
        return None
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if token == "" and (args.token is not None or TOKEN_ENV in os.environ):
        raise UsageError("the token is empty", [("--token" if args.token is not None else TOKEN_ENV, "''")],
                         "give a token, or leave it out for a random one")
    return token or new_token()


def check_args(args: argparse.Namespace) -> None:
    from tuneterm.core.errors import UsageError
    from tuneterm.tui.navigation import BY_MODE

    if args.screen and args.screen not in BY_MODE:
        raise UsageError(f"unknown screen {args.screen!r}", [("--screen", args.screen)],
                         "one of " + ", ".join(BY_MODE))
    if not 0 <= args.port < 65536:
        raise UsageError("the port must be 0-65535", [("--port", str(args.port))])
    if args.public_url and not args.public_url.startswith(("http://", "https://")):
        raise UsageError("--public-url must start with http:// or https://", [("--public-url", args.public_url)])


def open_url(base: str, token: str | None) -> str:
    return f"{base.rstrip('/')}/" + (f"?token={token}" if token else "")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tuneterm.web.guard import Guard
    from tuneterm.web.server import WorkbenchServer

    check_args(args)
    token = resolve_token(args)
    from tuneterm.core.shared_servers import SHARED_ENV

    os.environ.setdefault(SHARED_ENV, "1")  # tabs chatting with the same models share one server (one copy)
    guard = Guard(args.host, args.port, token, args.public_url)
    server = WorkbenchServer(app_argv(args.screen), guard, args.host, args.port, args.public_url)

    def ready(port: int) -> None:
        guard.port = port
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        shown = f"[{shown}]" if ":" in shown else shown
        print(f"tuneterm web: listening on {args.host}:{port}; the workbench is at "
              f"{open_url(args.public_url or f'http://{shown}:{port}', token)}", flush=True)
        if not is_loopback(args.host):
            print(f"warning: serving on {args.host}:{port}: anyone who reaches this address and has the "
                  "token drives the workbench (jobs, datasets, models). Safer: keep 127.0.0.1 and use an "
                  f"SSH tunnel (ssh -L {port}:127.0.0.1:{port} THIS-HOST).", file=sys.stderr, flush=True)
        print("press Ctrl+C to stop", flush=True)

    try:
        asyncio.run(server.run_until_stopped(ready))
    except KeyboardInterrupt:
        pass
    return 0
