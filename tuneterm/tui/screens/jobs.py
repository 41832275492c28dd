"""JobsScreen: every job in the workspace, live; the selected job's curves, speed, ETA and log.

The app's job watcher (tuneterm.tui.job_watch) reads the job folders; this screen follows the
selected job and only draws. Jobs are detached processes: closing the workbench leaves them
running, and reopening it finds them again. A job folder that vanishes or a damaged status file
shows as a notification, not a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.markup import escape
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from tuneterm.tui.job_progress import loss_series, progress
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.job_table import JobTable
from tuneterm.tui.widgets.log_tail import LogTail
from tuneterm.tui.widgets.loss_chart import LossChart


class JobsScreen(WorkbenchScreen):
    MODE = "jobs"
    CONTENT = "JobTable"
    BINDINGS = [
        Binding("c", "cancel_job", "Cancel", id="jobs.cancel"),
        Binding("r", "resume_job", "Resume", id="jobs.resume"),
        Binding("o", "open_artifact", "Artifact", id="jobs.artifact"),
        Binding("d", "remove_job", "Remove", id="jobs.remove", show=False),
        Binding("ctrl+r", "refresh", "Refresh", id="jobs.refresh", show=False),
    ]

    @dataclass
    class ActionDone(Message):
        text: str
        results: list = field(default_factory=list)

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None
        self.events: dict[str, list[dict]] = {}
        self.jobs: dict[str, object] = {}

    def compose_body(self):
        with Vertical(id="jobs-body"):
            yield JobTable(id="job-table")
            with Horizontal(id="job-detail"):
                with Vertical(id="job-left"):
                    yield Static("select a job", id="job-summary")
                    yield LossChart(id="loss-chart")
                yield LogTail(id="log-tail")

    def on_mount(self) -> None:
        self.watch_jobs(self._jobs_seen_here)

    # --- drawing (main thread) --------------------------------------------------------------------

    def _jobs_seen_here(self, seen) -> None:
        self.jobs = {str(j.id): j for j in seen.jobs}
        table = self.query_one(JobTable)
        table.show_jobs(list(seen.jobs), seen.events)
        if not self.jobs:
            self.query_one("#job-summary", Static).update("no jobs yet: launch one from Train (3)")
        if self.selected not in self.jobs:
            self._select(table.selected_id)
            return
        if self.selected in seen.events:
            self.events[self.selected] = seen.events[self.selected]
            self._draw_detail(self.selected, self.events[self.selected])
            self.query_one(LogTail).show(seen.logs.get(self.selected, []))

    def _draw_detail(self, job_id: str, events: list[dict]) -> None:
        info = self.jobs.get(job_id)
        state = str(getattr(info, "state", "?"))
        active = state in ("queued", "running")
        lines = [f"[b]{job_id}[/b] {getattr(info, 'kind', '')} · {state}",
                 escape(progress(events, active=active, now=time.time()).line())]
        error = getattr(info, "error", None)
        if error:
            lines.append(f"[red]{escape(str(error).splitlines()[-1][:200])}[/red]")
        if getattr(info, "model_ref", None):
            lines.append(f"artifact: {info.model_ref} (o)")
        summary = self.query_one("#job-summary", Static)
        summary.update("\n".join(lines))
        summary.set_class(state == "failed", "-failed")
        train, evals = loss_series(events)
        self.query_one(LossChart).set_series(train, evals)

    @on(DataTable.RowHighlighted, "#job-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._select(str(event.row_key.value) if event.row_key is not None else None)

    def _select(self, job_id: str | None) -> None:
        if job_id == self.selected:
            return
        self.selected = job_id
        if job_id is None:
            self.query_one("#job-summary", Static).update("no jobs yet: launch one from Train (3)")
            self.query_one(LossChart).set_series([], [])
            self.query_one(LogTail).show([])
            return
        self.query_one("#job-summary", Static).update(f"[b]{job_id}[/b] loading…")
        self.follow_jobs(job_id, log=True)

    # --- actions ------------------------------------------------------------------------------

    def _selected_job(self):
        if not self.selected:
            self.notify("no job selected", severity="warning", timeout=3)
        return self.selected

    def action_cancel_job(self) -> None:
        job_id = self._selected_job()
        if not job_id:
            return
        from tuneterm.tui.screens.modals import ConfirmModal

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_job_action("cancel", job_id)

        self.app.push_screen(ConfirmModal(f"Cancel job {job_id}? It saves a checkpoint and stops."), answered)

    def action_resume_job(self) -> None:
        if job_id := self._selected_job():
            self._run_job_action("resume", job_id)

    def action_remove_job(self) -> None:
        job_id = self._selected_job()
        if not job_id:
            return
        from tuneterm.tui.screens.modals import ConfirmModal

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_job_action("remove", job_id)

        self.app.push_screen(ConfirmModal(f"Remove job {job_id} and its folder?"), answered)

    def action_refresh(self) -> None:
        self.poke_jobs()

    @work(thread=True, group="jobs-action", exit_on_error=False)
    def _run_job_action(self, verb: str, job_id: str) -> None:
        from tuneterm.core import jobs

        getattr(jobs, verb)(job_id)
        past = {"cancel": "cancelling", "resume": "resumed", "remove": "removed"}[verb]
        self.post_message(self.ActionDone(f"{past} {job_id}"))

    @on(ActionDone)
    def _action_done(self, event: ActionDone) -> None:
        self.notify(event.text, timeout=4)
        self.poke_jobs()

    def action_open_artifact(self) -> None:
        job_id = self._selected_job()
        if not job_id:
            return
        from tuneterm.tui.screens.modals import ArtifactModal

        info = self.jobs.get(job_id)
        job_dir = getattr(info, "dir", None)
        output = f"{job_dir}/output" if job_dir else "(unknown)"
        ref = getattr(info, "model_ref", None)
        facts = [("state", str(getattr(info, "state", "?")))]
        if not ref:
            facts.append(("note", "the job has not written output/artifact.json (yet)"))
        self.app.push_screen(ArtifactModal(job_id, ref, output, facts))

