"""The server: a Starlette app on uvicorn, its state, start and stop.

:class:`ChatServer` binds its socket at once (with a large listen backlog: a burst of connections
waits in the kernel's queue instead of being reset) and serves from :meth:`serve_forever` (the main
thread: SIGTERM and Ctrl-C stop it gracefully) or from a thread (:func:`serve_in_thread`). Stopping
refuses new requests, ends the streams in flight with a final error event and the queued requests
with a 503, and returns within a few seconds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from tuneterm.core.errors import UsageError
from tuneterm.workers.serve.admission import Admission
from tuneterm.workers.serve.metrics import Metrics
from tuneterm.workers.serve.routes import ROUTES, not_found
from tuneterm.core.hosts import is_loopback
from tuneterm.workers.variants import ServedModel, load_variants

BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
WAITING_PER_RUNNING = 4  # --max-waiting's default: this many times --max-running


def default_max_running() -> int:
    from tuneterm.workers.batcher import DEFAULT_MAX_BATCH

    return DEFAULT_MAX_BATCH


@dataclass
class ServeState:
    """What the endpoints share; touched on the event loop's thread, except ``variants`` (set
    once by the loader) and the thread-safe metrics."""

    variants: dict[str, ServedModel] | None
    api_key: str | None
    admission: Admission
    metrics: Metrics
    request_timeout: float | None = None
    read_timeout: float = 30.0
    created: int = field(default_factory=lambda: int(time.time()))
    active: set = field(default_factory=set)
    stopping: bool = False
    load_error: BaseException | None = None

    def begin_stop(self) -> None:
        """Stop: queued requests get a 503, every request in flight its final event."""
        self.stopping = True
        self.admission.refuse_waiting()
        for generation in list(self.active):
            generation.events.put_nowait(("stop", None))


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
        super().__init__(config)
        self.state = state
        self.started_event = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.started_event.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.state.begin_stop()
        await asyncio.sleep(0)  # let the streams send their final events
        await super().shutdown(sockets)


class ChatServer:
    """An OpenAI-compatible server over ``variants`` (None: loading; see :meth:`load_in_background`)."""

    def __init__(self, address: tuple[str, int], variants: dict[str, ServedModel] | None, api_key: str | None = None,
                 quiet: bool = True, max_running: int | None = None, max_waiting: int | None = None,
                 request_timeout: float | None = None, read_timeout: float = 30.0,
                 keep_alive_timeout: float = 5.0, backlog: int = BACKLOG) -> None:
        max_running = max_running or default_max_running()
        max_waiting = WAITING_PER_RUNNING * max_running if max_waiting is None else max_waiting
        self.metrics = Metrics()
        self.state = ServeState(variants, api_key, Admission(max_running, max_waiting, self.metrics), self.metrics,
                                request_timeout=request_timeout, read_timeout=read_timeout)
        self.socket = _listen(address, backlog)
        self.server_address = self.socket.getsockname()
        app = Starlette(routes=ROUTES, exception_handlers={HTTPException: not_found})
        app.state.serve = self.state
        config = uvicorn.Config(app, lifespan="off", log_level="warning" if quiet else "info", access_log=not quiet,
                                timeout_keep_alive=keep_alive_timeout, timeout_graceful_shutdown=5,
                                backlog=backlog, loop="asyncio", http="h11", ws="none")
        self._uvicorn = _Uvicorn(config, self.state)
        self._done = threading.Event()
        if variants is not None:
            self._prepare(variants)

    @property
    def variants(self) -> dict[str, ServedModel] | None:
        return self.state.variants

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def admission(self) -> Admission:
        return self.state.admission

    def _prepare(self, variants: dict[str, ServedModel]) -> None:
        """Give every group a decode loop wide enough for ``--max-running`` rows (a classifier has none)."""
        from tuneterm.workers.batcher import Batcher

        width = self.state.admission.max_running
        for group in {id(v.group): v.group for v in variants.values()}.values():
            if getattr(group, "is_classifier", False):
                continue
            with group.lock:
                if group.batcher is None and not group.lean_loop and not getattr(group.model, "is_llamacpp", False):
                    group.batcher = Batcher(group.model, group.tokenizer, mixed_adapters=group.is_peft,
                                            max_batch=width)
        self.state.variants = variants

    def load_in_background(self, load: Callable[[], dict[str, ServedModel]],
                           on_error: Callable[[BaseException], None] | None = None) -> threading.Thread:
        """Load the models while the server already answers (``/health`` is 503 until they are in)."""

        def run() -> None:
            try:
                self._prepare(load())
            except BaseException as exc:  # noqa: BLE001 - reported by /health and by the command
                self.state.load_error = exc
                if on_error is not None:
                    on_error(exc)

        thread = threading.Thread(target=run, name="tuneterm-serve-load", daemon=True)
        thread.start()
        return thread

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, SIGTERM or Ctrl-C (signals only in the main thread)."""
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._done.set()

    def wait_started(self, timeout: float = 30.0) -> bool:
        return self._uvicorn.started_event.wait(timeout)

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop serving (from another thread) and wait until it has."""
        self._uvicorn.should_exit = True
        if self._uvicorn.started_event.is_set():
            self._done.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def _listen(address: tuple[str, int], backlog: int) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def make_server(refs: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                dtype: str | None = None, device: str | None = None, quiet: bool = True,
                variants: dict[str, ServedModel] | None = None, **options: Any) -> ChatServer:
    """Load the models (unless ``variants`` are given or ``options['loading']``) and bind (not yet
    serving). Refuses a non-loopback host without a key. ``options`` go to :class:`ChatServer`."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"serving on {host} needs an API key",
            [("host", host)],
            "pass --api-key KEY (clients send it as 'Authorization: Bearer KEY'), or bind to 127.0.0.1",
        )
    loading = options.pop("loading", False)
    if variants is None and not loading:
        variants = load_variants(refs, dtype=dtype, device=device)
    try:
        return ChatServer((host, port), variants, api_key=api_key, quiet=quiet, **options)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}", [("problem", exc.strerror or str(exc))],
                         "pick another --port (0 picks a free one)") from exc


def serve_in_thread(server: ChatServer) -> threading.Thread:
    """Serve ``server`` from a daemon thread (tests, benchmarks, `chat --compare`); returns once it
    accepts connections."""
    thread = threading.Thread(target=server.serve_forever, name="tuneterm-serve", daemon=True)
    thread.start()
    server.wait_started()
    return thread
