"""A one-line progress bar on stderr when it is a terminal; silent otherwise (``on_change`` still
reports progress, e.g. as job events for the TUI).

Inside a long batch, :meth:`ProgressBar.working` says how far the batch's unfinished rows have
come (``0/10 · token 3/8``): the bar, its pace and its ETA move with the decode steps instead of
waiting for the batch to end; the count itself (and ``on_change``) moves only by finished rows.
"""

from __future__ import annotations

import sys
import time

from tuneterm.core.jobs.eta import format_duration


class ProgressBar:
    def __init__(self, label: str, total: int, enabled: bool, on_change=None) -> None:
        self.label, self.total, self.enabled = label, total, enabled and total > 0
        self.on_change = on_change  # (done, total) after each advance: job events
        self.done = 0
        self.partial = 0.0  # rows' worth of work done in the running batch, beyond ``done``
        self.detail = ""  # what the running batch is at, e.g. "token 3/8"
        self._started = time.perf_counter()
        self._last = 0.0
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        if self.on_change is not None and n:
            self.on_change(self.done, self.total)
        self._draw()

    def working(self, partial: float, detail: str = "") -> None:
        """The running batch's progress short of finished rows (0, "" when it ends)."""
        self.partial = max(0.0, min(float(self.total - self.done), partial))
        self.detail = detail
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        width = 24
        progress = min(float(self.total), self.done + self.partial)
        filled = int(width * progress / self.total) if self.total else width
        rate = progress / (now - self._started) if now > self._started else 0.0
        eta = f" ETA {format_duration((self.total - progress) / rate)}" if rate > 0 and self.done < self.total else ""
        detail = f" · {self.detail}" if self.detail and self.done < self.total else ""
        sys.stderr.write(f"\r{self.label[:40]:<40} [{'█' * filled}{'░' * (width - filled)}] "
                         f"{self.done}/{self.total}{detail} {rate:5.1f} it/s{eta}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.partial, self.detail = 0.0, ""
            self._draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
