"""JobsScreen: every job in the workspace, live; the selected job's curves, speed, ETA and log.

A thread worker re-reads the job folders about once a second (torch-free, through
tuneterm.core.jobs) and posts what it found; the screen only draws. Jobs are detached
processes: closing the workbench leaves them running, and reopening it finds them again.
A job folder that vanishes or a damaged status file shows as a notification, not a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from tuneterm.tui import backends
from tuneterm.tui.job_progress import loss_series, progress
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.job_table import JobTable
from tuneterm.tui.widgets.log_tail import LogTail
from tuneterm.tui.widgets.loss_chart import LossChart

JOBS_MODULE = "tuneterm.core.jobs"


class JobsScreen(WorkbenchScreen):
    MODE = "jobs"
    BINDINGS = [
        Binding("c", "cancel_job", "Cancel", id="jobs.cancel"),
        Binding("r", "resume_job", "Resume", id="jobs.resume"),
        Binding("o", "open_artifact", "Artifact", id="jobs.artifact"),
        Binding("d", "remove_job", "Remove", id="jobs.remove", show=False),
        Binding("ctrl+r", "refresh", "Refresh", id="jobs.refresh", show=False),
    ]

    @dataclass
    class JobsPolled(Message):
        jobs: list

    @dataclass
    class DetailPolled(Message):
        job_id: str
        events: list[dict]
        reset: bool
        log: list[str]
        info: object = None

    @dataclass
    class PollFailed(Message):
        error: BaseException
        job_id: str | None = None

    @dataclass
    class BackendMissing(Message):
        missing: backends.Missing

    @dataclass
    class ActionDone(Message):
        text: str
        results: list = field(default_factory=list)

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None
        self.events: dict[str, list[dict]] = {}
        self.jobs: dict[str, object] = {}
        self.visible = True
        self._last_error = ""
        self._poke = False

    def compose_body(self):
        with Vertical(id="jobs-body"):
            yield Static("", id="jobs-missing", classes="missing hidden")
            yield JobTable(id="job-table")
            with Horizontal(id="job-detail"):
                with Vertical(id="job-left"):
                    yield Static("select a job", id="job-summary")
                    yield LossChart(id="loss-chart")
                yield LogTail(id="log-tail")

    def on_mount(self) -> None:
        self.query_one(JobTable).focus()
        self.after_first_paint(self._poll)

    def on_screen_suspend(self) -> None:
        self.visible = False

    def on_screen_resume(self) -> None:
        self.visible = True
        self._poke = True

    # --- the poller (thread): reads, posts; never touches widgets ---------------------------------

    @work(thread=True, exclusive=True, group="jobs-poll", exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        jobs = backends.load(JOBS_MODULE, "Use `tuneterm jobs ls` once the jobs module has landed.")
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        from tuneterm.core.settings import get_settings

        interval = max(0.2, float(get_settings().job_poll_seconds))
        offsets: dict[str, int] = {}
        while not worker.is_cancelled:
            if self.visible:
                self._poll_once(jobs, offsets)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not worker.is_cancelled and not self._poke:
                time.sleep(0.05)
            self._poke = False

    def _poll_once(self, jobs, offsets: dict[str, int]) -> None:
        try:
            listed = list(reversed(jobs.list_jobs()))  # newest first
        except Exception as exc:  # a damaged folder must not stop the poller
            self.post_message(self.PollFailed(exc))
            return
        self.post_message(self.JobsPolled(listed))
        job_id = self.selected
        if not job_id:
            return
        reset = job_id not in offsets
        try:
            new, offsets[job_id] = jobs.read_events(job_id, offsets.get(job_id, 0))
            log = list(jobs.tail_log(job_id, lines=200))
            info = jobs.get_job(job_id)
        except Exception as exc:
            offsets.pop(job_id, None)
            self.post_message(self.PollFailed(exc, job_id))
            return
        self.post_message(self.DetailPolled(job_id, list(new), reset, log, info))

    # --- drawing (main thread) --------------------------------------------------------------------

    @on(BackendMissing)
    def _show_missing(self, event: BackendMissing) -> None:
        note = self.query_one("#jobs-missing", Static)
        note.update(event.missing.describe())
        note.remove_class("hidden")

    @on(JobsPolled)
    def _show_jobs(self, event: JobsPolled) -> None:
        self._last_error = ""
        self.jobs = {str(j.id): j for j in event.jobs}
        table = self.query_one(JobTable)
        table.show_jobs(event.jobs)
        if not self.jobs:
            self.query_one("#job-summary", Static).update("no jobs yet: launch one from Train (3)")
        if self.selected not in self.jobs:
            self._select(table.selected_id)

    @on(DetailPolled)
    def _show_detail(self, event: DetailPolled) -> None:
        if event.job_id != self.selected:
            return
        events = [] if event.reset else self.events.get(event.job_id, [])
        events = events + event.events
        self.events[event.job_id] = events
        if event.info is not None:
            self.jobs[event.job_id] = event.info
        self._draw_detail(event.job_id, events)
        self.query_one(LogTail).show(event.log)

    def _draw_detail(self, job_id: str, events: list[dict]) -> None:
        info = self.jobs.get(job_id)
        state = str(getattr(info, "state", "?"))
        lines = [f"[b]{job_id}[/b] {getattr(info, 'kind', '')} · {state}", progress(events, active=state in ("queued", "running")).line()]
        error = getattr(info, "error", None)
        if error:
            lines.append(f"[red]{_escape(str(error).splitlines()[-1][:200])}[/red]")
        if getattr(info, "model_ref", None):
            lines.append(f"artifact: {info.model_ref} (o)")
        summary = self.query_one("#job-summary", Static)
        summary.update("\n".join(lines))
        summary.set_class(state == "failed", "-failed")
        train, evals = loss_series(events)
        self.query_one(LossChart).set_series(train, evals)

    @on(PollFailed)
    def _show_poll_error(self, event: PollFailed) -> None:
        text = f"{event.job_id}: {event.error}"
        if text != self._last_error:  # once per distinct problem, not once a second
            self._last_error = text
            self.report_error(event.error)

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
        self._poke = True

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
        self._poke = True

    @work(thread=True, group="jobs-action", exit_on_error=False)
    def _run_job_action(self, verb: str, job_id: str) -> None:
        jobs = backends.load(JOBS_MODULE)
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        getattr(jobs, verb)(job_id)
        past = {"cancel": "cancelling", "resume": "resumed", "remove": "removed"}[verb]
        self.post_message(self.ActionDone(f"{past} {job_id}"))

    @on(ActionDone)
    def _action_done(self, event: ActionDone) -> None:
        self.notify(event.text, timeout=4)
        self._poke = True

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


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
