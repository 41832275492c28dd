"""One watcher for the workbench's jobs: a single thread reads the jobs folder and publishes.

The app owns one :class:`JobWatcher`. Its thread (a Textual worker on the app) re-reads the
workspace's job folders every ``settings.job_poll_seconds`` (a ``threading.Event`` wait, so a
``poke()`` reads again at once), reads the new events of the jobs someone follows, and
publishes a :class:`JobsSeen` through a Textual ``Signal``. Screens and widgets subscribe and
say which jobs they follow; they only draw. The thread reads only while someone listens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from textual.signal import Signal


@dataclass(frozen=True)
class JobsSeen:
    """What one read of the jobs folder found.

    ``jobs`` is every job, newest first. ``events`` and ``logs`` hold, for each followed job,
    all its events so far and (when asked for) the last lines of its log. ``error`` is the
    problem that stopped this read, if any (a damaged folder); the next read tries again.
    """

    jobs: tuple = ()
    events: dict[str, list[dict]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    error: BaseException | None = None
    error_job: str | None = None

    def job(self, job_id: str | None):
        return next((j for j in self.jobs if str(j.id) == job_id), None) if job_id else None

    def of_kind(self, *kinds: str) -> list:
        return [j for j in self.jobs if str(j.kind) in kinds]


class JobWatcher:
    """Reads the job folders for every subscriber; see the module docstring."""

    LOG_LINES = 200

    def __init__(self, owner) -> None:
        self.signal: Signal[JobsSeen] = Signal(owner, "jobs")
        self.latest = JobsSeen()
        self._follows: dict[int, tuple[frozenset[str], bool]] = {}  # id(node) -> (job ids, with log)
        self._listeners = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._offsets: dict[str, int] = {}
        self._events: dict[str, list[dict]] = {}

    # --- main thread -------------------------------------------------------------------------------

    def subscribe(self, node, callback: Callable[[JobsSeen], object]) -> None:
        """Call ``callback(seen)`` on ``node`` after every read (and now, with the latest one)."""
        self.signal.subscribe(node, callback)
        self._listeners += 1
        if self.latest.jobs or self.latest.error:
            node.call_next(callback, self.latest)
        self.poke()

    def follow(self, node, job_ids, log: bool = False) -> None:
        """Read the events (and the log, if ``log``) of ``job_ids`` for ``node``; replaces its last call."""
        wanted = frozenset(j for j in job_ids if j)
        if self._follows.get(id(node)) != (wanted, log):
            self._follows[id(node)] = (wanted, log)
            self.poke()

    def poke(self) -> None:
        """Read again now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- the thread ---------------------------------------------------------------------------------

    def run(self, interval: float, publish: Callable[[JobsSeen], None], cancelled: Callable[[], bool]) -> None:
        """Read, publish, wait ``interval`` seconds or for a poke; until stopped or ``cancelled()``."""
        while not self._stop.is_set() and not cancelled():
            self._wake.clear()
            if self._listeners:
                publish(self.read_once())
            self._wake.wait(interval)

    def read_once(self) -> JobsSeen:
        from tuneterm.core import jobs

        try:
            listed = tuple(reversed(jobs.list_jobs()))  # newest first
        except Exception as exc:  # noqa: BLE001 - a damaged folder must not stop the watcher
            return JobsSeen(self.latest.jobs, self.latest.events, self.latest.logs, exc)
        follows = list(self._follows.values())
        wanted = {j for ids, _log in follows for j in ids}
        with_log = {j for ids, log in follows if log for j in ids}
        present = {str(j.id) for j in listed}
        for gone in set(self._offsets) - wanted - present:
            self._offsets.pop(gone, None)
            self._events.pop(gone, None)
        events: dict[str, list[dict]] = {}
        logs: dict[str, list[str]] = {}
        error, error_job = None, None
        for job_id in sorted(wanted & present):
            try:
                new, self._offsets[job_id] = jobs.read_events(job_id, self._offsets.get(job_id, 0))
                if new:
                    self._events[job_id] = self._events.get(job_id, []) + list(new)
                events[job_id] = self._events.get(job_id, [])
                if job_id in with_log:
                    logs[job_id] = list(jobs.tail_log(job_id, lines=self.LOG_LINES))
            except Exception as exc:  # noqa: BLE001 - reported once by the subscribers; read again next time
                self._offsets.pop(job_id, None)
                self._events.pop(job_id, None)
                error, error_job = exc, job_id
        self.latest = JobsSeen(listed, events, logs, error, error_job)
        return self.latest
