"""ProgressLine: a long phase of a command, told on stderr (never stdout, so output stays pipeable).

``counting tokens: 400/888 examples, ETA 3s``: redrawn in place with ``\\r`` on a terminal (at most
every 0.1 s); elsewhere (a pipe, a log file) a line every ``every_s`` seconds and a last one at the
end, so a long run is never silent and a short one writes one line (two with a ``note``).
``note("loading the tokenizer of X")`` announces a fixed-cost phase before it. The ETA is the pace
so far (done / elapsed), written with :func:`tuneterm.core.jobs.eta.format_duration`.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tuneterm.core.jobs.eta import format_duration


class ProgressLine:
    def __init__(self, what: str, unit: str = "examples", total: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, every_s: float = 5.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.what, self.unit, self.total = what, unit, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.every_s = every_s
        self.clock = clock
        self.done = 0
        self._started: float | None = None
        self._last: float | None = None
        self._open = False  # a terminal line is drawn and not yet ended

    # --- phases -----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A phase with no count (a model or tokenizer load): ``text ...`` on a line of its own
        (on a terminal, until the next draw replaces it)."""
        self._write(f"{text} ...")

    def start(self, what: str | None = None, total: int | None | object = ...) -> None:
        """Begin counting (again): the clock for the pace and the ETA starts now; ``what`` and
        ``total`` (None: unknown) replace those given before."""
        if what is not None:
            self.what = what
        if total is not ...:
            self.total = total  # type: ignore[assignment]
        self.done = 0
        self._started, self._last = self.clock(), None

    # --- counting ---------------------------------------------------------------------------

    def update(self, done: int) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        self.done = done
        if self.total is not None and done > self.total:  # an estimate that fell short: no total
            self.total = None
        # a terminal redraws at once and then 10 times a second; a log gets a line every every_s
        since = self._last if self._last is not None else (None if self.tty else self._started)
        if since is not None and now - since < (0.1 if self.tty else self.every_s):
            return
        self._last = now
        self._write(self.text(now))

    def close(self) -> None:
        """The last line: ``counting tokens: 888/888 examples, 2s``; ends a terminal line."""
        if self._started is None:
            self.end()
            return
        now = self.clock()
        self.total = self.done  # an estimate (CSV lines) is corrected by the real count
        self._write(self.text(now, final=True))
        self.end()
        self._started = None

    def text(self, now: float, final: bool = False) -> str:
        count = f"{self.done:,}/{self.total:,}" if self.total is not None else f"{self.done:,}"
        elapsed = now - (self._started if self._started is not None else now)
        if final:
            return f"{self.what}: {count} {self.unit}, {format_duration(elapsed)}"
        tail = ""
        if self.total and self.done and elapsed > 0 and self.done < self.total:
            tail = f", ETA {format_duration((self.total - self.done) * elapsed / self.done)}"
        return f"{self.what}: {count} {self.unit}{tail}"

    # --- output -----------------------------------------------------------------------------

    def _write(self, line: str) -> None:
        try:
            if self.tty:
                self.stream.write(f"\r{line}\x1b[K")
                self._open = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr never fails the command
            pass

    def end(self) -> None:
        """End a terminal line without a last count (a phase that failed: the error follows)."""
        if self.tty and self._open:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self._open = False
