"""JobProgressLine: one line about a job a screen launched: state, step, loss, speed, ETA.

The screen passes what the app's job watcher read (tuneterm.tui.job_watch); the ETA is
tuneterm.core.jobs.eta's, the one `tuneterm jobs ls` shows, counting down to now.
"""

from __future__ import annotations

import time

from rich.markup import escape
from textual.widgets import Static

from tuneterm.tui.job_progress import progress


class JobProgressLine(Static):
    def __init__(self, idle: str = "no job launched from here yet", **kwargs) -> None:
        super().__init__(idle, **kwargs)
        self.job_id: str | None = None
        self.text = idle

    def show(self, seen) -> None:
        """Draw the followed job as of ``seen`` (a JobsSeen); nothing to do while it is not listed."""
        info = seen.job(self.job_id)
        if info is None:
            return
        state = str(info.state)
        events = seen.events.get(self.job_id, [])
        parts = [f"job {self.job_id} · {state}", progress(events, active=state in ("queued", "running"),
                                                          now=time.time()).line()]
        if info.error:
            parts.append(str(info.error).strip().splitlines()[-1][:160])
        elif info.model_ref:
            parts.append(f"use it as {info.model_ref}")
        self.text = " · ".join(parts)
        self.update(escape(self.text))
