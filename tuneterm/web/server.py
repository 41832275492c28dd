"""Serve the workbench to browsers: textual-serve's page and websocket relay behind :mod:`guard`.

One ``tuneterm tui`` process per browser tab, in a process group of its own, so that closing the
tab (or stopping the server) ends it and whatever it started in its group. The page's script and
websocket URLs come from ``--public-url`` or else from the request itself, so a browser on another
machine loads the page when the server is bound to 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from tuneterm.core.errors import UsageError
from tuneterm.core.resources import data_dir
from tuneterm.web.guard import Guard

QUIT_GRACE_S = 1.5  # a tab's app gets this long to quit cleanly before its process group is killed
KILL_GRACE_S = 0.5


class TabService(AppService):
    """textual-serve's relay for one tab, with the app in its own process group (killable whole)."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        super().__init__(" ".join(argv), **kwargs)
        self.argv = argv

    async def _open_app_process(self, width: int = 80, height: int = 24):
        env = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        self._stdin = process.stdin
        return process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _signal_group(self, sig: int) -> None:
        if self._process is None or self._process.returncode is not None and sig != signal.SIGKILL:
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self) -> None:
        """Ask the app to quit; after a short grace, end its process group (SIGTERM, then SIGKILL)."""
        task, self._task = self._task, None
        if task is None:
            return
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        await self.send_meta({"type": "quit"})
        for sig, grace in ((None, QUIT_GRACE_S), (signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
            if sig is not None:
                self._signal_group(sig)
            try:
                await asyncio.wait_for(asyncio.shield(self._wait_process()), grace)
                break
            except asyncio.TimeoutError:
                continue
        self._signal_group(signal.SIGKILL)  # anything the app left in its group
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _wait_process(self) -> None:
        if self._process is not None:
            await self._process.wait()


class WorkbenchServer(Server):
    """textual-serve's Server with the guard in front, URLs from the request, and a clean stop."""

    def __init__(self, argv: list[str], guard: Guard, host: str, port: int, public_url: str | None = None):
        super().__init__(" ".join(argv), host=host, port=port, title="tuneterm", public_url=public_url,
                         templates_path=data_dir() / "web")
        self.argv = argv
        self.guard = guard
        self.given_public_url = public_url.rstrip("/") if public_url else None
        self.tabs: dict[web.WebSocketResponse, TabService] = {}
        self.bound_port: int | None = None

    # --- requests ---------------------------------------------------------------------------------

    def _middleware(self):
        guard = self.guard

        @web.middleware
        async def check(request: web.Request, handler):
            if not guard.host_ok(request.headers.get("Host")):
                return web.Response(status=403, text="403: this server answers to localhost only "
                                    "(the Host header names another machine)\n")
            from_query = request.query.get("token")
            if not (guard.token_ok(from_query) or guard.token_ok(request.cookies.get(guard.cookie_name))):
                return web.Response(status=403, text="403: open the URL with ?token=... that "
                                    "`tuneterm web` printed\n")
            if request.path == "/ws" and not guard.origin_ok(request.headers.get("Origin"), request.scheme,
                                                              request.host):
                return web.Response(status=403, text="403: websocket from another origin\n")
            response = await handler(request)
            if guard.token is not None and from_query and request.path == "/" and not response.prepared:
                response.set_cookie(guard.cookie_name, guard.token, httponly=True, samesite="Strict",
                                    path="/", secure=request.scheme == "https")
            return response

        return check

    def base_url(self, request: web.Request) -> str:
        """Where the browser reaches us: --public-url, else what the request itself was sent to."""
        return self.given_public_url or f"{request.scheme}://{request.host}"

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._middleware())
        app.on_startup.clear()  # textual-serve's banner names the bind address, not the URL to open
        return app

    async def handle_index(self, request: web.Request) -> web.Response:
        base = self.base_url(request)
        ws_base = ("wss:" if base.startswith("https:") else "ws:") + base.split(":", 1)[1]
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"{ws_base}{request.app.router['websocket'].url_for()}",
            "static_url": f"{base}/static/",
            "title": self.title,
        }
        response = aiohttp_jinja2.render_template("index.html", request, context)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token never leaves in a Referer
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        await websocket.prepare(request)
        service = TabService(self.argv, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                             close=websocket.close, download_manager=self.download_manager)
        self.tabs[websocket] = service
        try:
            await service.start(width, height)
            await self._process_messages(websocket, service)
        except asyncio.CancelledError:
            pass
        except Exception as error:  # a broken message from one tab ends that tab, not the server
            print(f"tuneterm web: tab ended: {error!r}", file=sys.stderr)
        finally:
            await service.stop()
            self.tabs.pop(websocket, None)
            if not websocket.closed:
                await websocket.close()
        return websocket

    # --- start and stop ---------------------------------------------------------------------------

    async def _stop_tabs(self) -> None:
        tabs = list(self.tabs.items())
        await asyncio.gather(*(service.stop() for _, service in tabs), return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws, _ in tabs), return_exceptions=True)

    async def run_until_stopped(self, on_ready, stop: asyncio.Event | None = None) -> None:
        """Bind (a busy port is a UsageError), call ``on_ready(port)``, serve until SIGINT/SIGTERM."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(await self._make_app(), handle_signals=False, shutdown_timeout=1.0,
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"cannot listen on {self.host}:{self.port}",
                             [("problem", exc.strerror or str(exc))],
                             "pick another --port (0 picks a free one)") from exc
        sockets = site._server.sockets if site._server is not None else []  # the real port for --port 0
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        on_ready(self.bound_port)
        try:
            await stop.wait()
        finally:
            await self._stop_tabs()
            await runner.cleanup()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
