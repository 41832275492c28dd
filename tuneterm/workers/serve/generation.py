"""One generation request as an ASGI response: admission, the decode loop's pieces, the end.

The decode loop (:mod:`tuneterm.workers.batcher`) runs in its own thread; each admitted request
gets a small pump thread that reads its text pieces and hands them to the event loop through an
``asyncio.Queue``. The same queue carries everything else that can end a request, so one loop
decides: the client left (``http.disconnect``: the request is cancelled and its row leaves the
batch at the next decode step), ``--request-timeout`` ran out (a final error event, or 504), the
server stops (a final error event, or 503), generation failed, or the answer is complete.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from tuneterm.core.errors import TunetermError
from tuneterm.core.generation import GenerationStats
from tuneterm.workers.serve.schemas import ApiError

if TYPE_CHECKING:
    from tuneterm.workers.serve.app import ServeState

CLIENT_GONE = 499  # the status recorded (never sent) for a request whose client left


class Renderer(Protocol):
    """How an endpoint shapes its answer (chat.completions, completions)."""

    def opening(self) -> list[dict | str]: ...
    def piece(self, text: Any) -> dict: ...  # a text piece, or (text, what the renderer adds to it)
    def closing(self, stats: GenerationStats) -> list[dict | str]: ...
    def body(self, text: str, stats: GenerationStats) -> dict: ...


async def send_json(send: Callable, status: int, obj: dict, headers: dict | None = None) -> None:
    data = json.dumps(obj).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def error_for(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TunetermError):
        bad_input = exc.exit_code in (2, 3)
        return ApiError(400 if bad_input else 500, exc.render(),
                        "invalid_request_error" if bad_input else "server_error")
    return ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")


class Generation:
    """An ASGI response that generates: ``start(cancel)`` returns the iterator of text pieces."""

    def __init__(self, state: "ServeState", endpoint: str, start: Callable[[threading.Event], Iterator[str]],
                 stats: GenerationStats, renderer: Renderer, stream: bool, arrived: float) -> None:
        self.state, self.endpoint, self.start = state, endpoint, start
        self.stats, self.renderer, self.stream, self.arrived = stats, renderer, stream, arrived
        self.events: asyncio.Queue = asyncio.Queue()
        timeout = state.request_timeout
        self.deadline = arrived + timeout if timeout else None

    def _remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        state = self.state
        state.active.add(self)
        watcher = asyncio.create_task(self._watch(receive))
        status = 200
        try:
            status = await self._run(send)
        finally:
            watcher.cancel()
            state.active.discard(self)
            state.metrics.requests.labels(self.endpoint, str(status)).inc()
            state.metrics.latency.observe(time.perf_counter() - self.arrived)

    async def _watch(self, receive: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.events.put_nowait(("gone", None))
                return

    async def _run(self, send: Callable) -> int:
        try:
            outcome = await self._admit()
        except ApiError as err:  # 429, or 503 while stopping
            await send_json(send, err.status, err.body(), err.headers)
            return err.status
        if outcome == "gone":
            self.state.metrics.cancelled.inc()
            return CLIENT_GONE
        if outcome != "ok":
            err = self._ending(outcome, None)
            await send_json(send, err.status, err.body(), err.headers)
            return err.status
        return await self._generate(send)

    async def _admit(self) -> str:
        if self.state.stopping:
            raise self._ending("stop", None)
        fut = self.state.admission.enter()  # raises the 429
        if fut is None:
            return "ok"
        getter = asyncio.ensure_future(self.events.get())
        await asyncio.wait({fut, getter}, timeout=self._remaining(), return_when=asyncio.FIRST_COMPLETED)
        if fut.done() and not fut.cancelled():
            if getter.done():
                self.events.put_nowait(getter.result())  # the main loop sees it next
            else:
                getter.cancel()
            fut.result()  # the 503 of a server that stops
            return "ok"
        self.state.admission.withdraw(fut)
        if getter.done():
            return getter.result()[0]
        getter.cancel()
        return "timeout"

    def _ending(self, kind: str, value: Any) -> ApiError:
        if kind == "timeout":
            return ApiError(504, f"the request ran longer than --request-timeout ({self.state.request_timeout:g} s)",
                            "server_error", code="request_timeout")
        if kind == "stop":
            return ApiError(503, "the server is shutting down", "server_error", code="server_shutdown")
        return error_for(value)

    async def _generate(self, send: Callable) -> int:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        admitted = time.perf_counter()
        threading.Thread(target=self._pump, args=(loop, cancel), name="tuneterm-serve-pump", daemon=True).start()
        pieces: list[str] = []
        first = True
        if self.stream:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            for event in self.renderer.opening():
                await self._event(send, event)
        while True:
            try:
                kind, value = await asyncio.wait_for(self.events.get(), self._remaining())
            except asyncio.TimeoutError:
                kind, value = "timeout", None
            if kind == "piece":
                if first:
                    first = False
                    self.state.metrics.ttft.observe(time.perf_counter() - admitted)
                if self.stream:
                    await self._event(send, self.renderer.piece(value))
                else:
                    pieces.append(value if isinstance(value, str) else value[0])
                continue
            if kind == "end":
                try:
                    final = self.renderer.closing(self.stats) if self.stream else \
                        self.renderer.body("".join(pieces), self.stats)
                except Exception as exc:  # noqa: BLE001 - shaping the answer failed: a 500, not a traceback
                    kind, value = "error", exc
                else:
                    if self.stream:
                        for event in final:
                            await self._event(send, event)
                        await send({"type": "http.response.body", "body": b""})
                    else:
                        await send_json(send, 200, final)
                    return 200
            cancel.set()  # the row leaves the batch at the decode loop's next step
            if kind == "gone":
                self.state.metrics.cancelled.inc()
                return CLIENT_GONE
            err = self._ending(kind, value)
            if self.stream:  # the headers went out: a final error event ends the stream
                await self._event(send, {"error": err.body()["error"]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send_json(send, err.status, err.body(), err.headers)
            return err.status

    @staticmethod
    async def _event(send: Callable, obj: dict | str) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        await send({"type": "http.response.body", "body": f"data: {payload}\n\n".encode(), "more_body": True})

    def _pump(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event) -> None:
        """The bridge thread: the decode loop's pieces into the event loop's queue."""

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(self.events.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening
                pass

        pieces = None
        counted = False
        try:
            pieces = self.start(cancel)
            for piece in pieces:
                put(("piece", piece))
            self.state.metrics.tokens.inc(self.stats.completion_tokens)  # counted before the answer ends
            counted = True
            put(("end", None))
        except Exception as exc:  # reported to the client by the event loop
            put(("error", exc))
        finally:
            if pieces is not None and hasattr(pieces, "close"):
                pieces.close()
            if not counted:
                self.state.metrics.tokens.inc(self.stats.completion_tokens)
            try:
                loop.call_soon_threadsafe(self.state.admission.release)
            except RuntimeError:
                pass
