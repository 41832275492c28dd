"""Back-pressure: at most ``max_running`` requests decode at once, ``max_waiting`` more queue
for a slot in arrival order, and the next one is refused at once with a 429 in OpenAI's shape and
a ``Retry-After`` header (as OpenAI's API and TGI's ``--max-concurrent-requests`` do).

Lives on the event loop's thread only; nothing here locks.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tuneterm.workers.serve.metrics import Metrics
from tuneterm.workers.serve.schemas import ApiError

RETRY_AFTER_S = 1


class Admission:
    def __init__(self, max_running: int, max_waiting: int, metrics: Metrics) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must be at least 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.running = 0
        self._waiting: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self) -> asyncio.Future | None:
        """Take a slot (None), or a place in the queue (a future resolved when a slot is handed
        over), or raise a 429 when both are full."""
        if self.running < self.max_running and not self._waiting:
            self.running += 1
            self._publish()
            return None
        if len(self._waiting) >= self.max_waiting:
            raise ApiError(
                429, f"the server is busy: {self.running} requests decoding and {len(self._waiting)} waiting "
                     f"(--max-running {self.max_running}, --max-waiting {self.max_waiting}); retry after "
                     f"{RETRY_AFTER_S} s", "rate_limit_error", code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)})
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self._publish()
        return fut

    def withdraw(self, fut: asyncio.Future) -> None:
        """A queued request gave up (its client left, it timed out, the server stops)."""
        if fut.done() and not fut.cancelled():  # a slot was handed over in the meantime: pass it on
            self.release()
            return
        fut.cancel()
        try:
            self._waiting.remove(fut)
        except ValueError:
            pass
        self._publish()

    def release(self) -> None:
        """A running request ended: its slot goes to the first one waiting, or is freed."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                self._publish()
                return
        self.running -= 1
        self._publish()

    def refuse_waiting(self) -> None:
        """Shutting down: every queued request is told so (their futures fail)."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(ApiError(503, "the server is shutting down", "server_error",
                                           code="server_shutdown"))
        self._publish()

    def _publish(self) -> None:
        self.metrics.running.set(self.running)
        self.metrics.waiting.set(len(self._waiting))
