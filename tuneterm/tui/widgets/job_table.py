"""JobTable: every job in the workspace, one row each, updated in place on each poll."""

from __future__ import annotations

import datetime as dt
import time

from tuneterm.tui.widgets.keyed_table import KeyedTable

COLUMNS = (("id", "ID"), ("kind", "kind"), ("state", "state"), ("progress", "progress"), ("started", "started"))

STATE_STYLE = {
    "running": "bold green",
    "queued": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
}


def _when(value) -> str:
    if value in (None, ""):
        return "-"
    try:
        if isinstance(value, (int, float)):
            stamp = dt.datetime.fromtimestamp(value)
        else:
            stamp = dt.datetime.fromisoformat(str(value)).astimezone()
        return stamp.strftime("%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):
        return str(value)[:11]


def _progress(job, events: list[dict] | None = None) -> str:
    """``4/10 · ETA 12s``: the last step and, while the job runs, the time left (from its events,
    or from its last event when it is not followed); for a queued job, what it waits for
    (``waiting for GPU 0: job 20261205-113233-a0c1``)."""
    from tuneterm.core.jobs.eta import eta_seconds, format_duration

    note = getattr(job, "note", None)
    if str(job.state) == "queued" and note:
        return str(note)
    event = getattr(job, "last_event", None) or {}
    step, total = event.get("step"), event.get("max_steps") or event.get("total_steps")
    if not isinstance(step, int):
        from tuneterm.core.jobs.describe import progress_text

        return (progress_text(event) if event.get("phase") else "") or "-"  # a quantize job: its phase
    text = f"{step}/{total}" if total else str(step)
    if str(job.state) in ("queued", "running"):
        left = eta_seconds(events or [event], time.time())
        if left is not None:
            text += f" · ETA {format_duration(left)}"
    return text


class JobTable(KeyedTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(COLUMNS, **kwargs)

    def show_jobs(self, jobs: list, events: dict[str, list[dict]] | None = None) -> None:
        """Make the table match ``jobs`` (in the order given), keeping the cursor on its job.
        ``events`` (job id -> its events, for the jobs followed) gives those rows an ETA."""
        from rich.text import Text

        rows = {}
        for job in jobs:
            state = str(job.state)
            rows[str(job.id)] = (
                str(job.id),
                str(job.kind),
                Text(state, style=STATE_STYLE.get(state, "")),
                _progress(job, (events or {}).get(str(job.id))),
                _when(job.started_at or job.created_at),
            )
        self.sync(rows)

    @property
    def job_ids(self) -> list[str]:
        return self.keys

    @property
    def selected_id(self) -> str | None:
        return self.selected_key
