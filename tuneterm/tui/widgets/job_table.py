"""JobTable: every job in the workspace, one row each, updated in place on each poll."""

from __future__ import annotations

import datetime as dt

from textual.widgets import DataTable

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


def _progress(job) -> str:
    event = getattr(job, "last_event", None) or {}
    step, total = event.get("step"), event.get("max_steps") or event.get("total_steps")
    if isinstance(step, int):
        return f"{step}/{total}" if total else str(step)
    return "-"


class JobTable(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.job_ids: list[str] = []

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_jobs(self, jobs: list) -> None:
        """Make the table match ``jobs`` (in the order given), keeping the cursor on its job."""
        from rich.text import Text

        ids = [str(job.id) for job in jobs]
        rows = {}
        for job in jobs:
            state = str(job.state)
            rows[str(job.id)] = {
                "id": str(job.id),
                "kind": str(job.kind),
                "state": Text(state, style=STATE_STYLE.get(state, "")),
                "progress": _progress(job),
                "started": _when(job.started_at or job.created_at),
            }
        if ids == self.job_ids:
            for job_id, cells in rows.items():
                for key, value in cells.items():
                    self.update_cell(job_id, key, value)
            return
        selected = self.selected_id
        self.clear()
        for job_id, cells in rows.items():
            self.add_row(*cells.values(), key=job_id)
        self.job_ids = ids
        if selected in ids:
            self.move_cursor(row=ids.index(selected))

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # the cursor is past a row that just went away
            return None
        return str(key.value) if key is not None else None
