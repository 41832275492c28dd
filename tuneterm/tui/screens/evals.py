"""EvalsScreen: pick a spec or suite and the variants, launch the eval as a job, follow it, read
the report: the variants with 95% intervals and the paired comparison, and the items where the
variants disagree.

The launch makes the checks `tuneterm eval` makes before a model loads (specs, data, metrics,
variants, few-shot pools; torch-free, in a worker), then writes an ``eval`` job and starts it
detached (tuneterm.workers.kinds.eval): it keeps running when the workbench closes. A poller thread
reads the eval jobs and the selected job's events; a finished job's report is read in a worker.
The screen only draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Select, Static
from textual.worker import get_current_worker

from tuneterm.tui import backends
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.eval_report import EvalReport
from tuneterm.tui.widgets.eval_variants import VariantsInput

JOBS = "tuneterm.core.jobs"
RUN_COLUMNS = ("id", "state", "progress")


class EvalsScreen(WorkbenchScreen):
    MODE = "evals"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="evals.launch"),
        Binding("ctrl+o", "open_report", "Open report", id="evals.open"),
        Binding("ctrl+t", "toggle_items", "Disagree/all", id="evals.toggle"),
        Binding("ctrl+b", "cancel_eval", "Cancel job", id="evals.cancel"),
        Binding("ctrl+r", "refresh", "Refresh", id="evals.refresh", show=False),
    ]

    @dataclass
    class SpecsLoaded(Message):
        specs: list[str]
        default_model: str

    @dataclass
    class RunsPolled(Message):
        jobs: list

    @dataclass
    class ProgressPolled(Message):
        job_id: str
        state: str
        line: str
        error: str | None = None

    @dataclass
    class ReportLoaded(Message):
        job_id: str
        title: str
        report: dict
        variant_rows: list
        warnings: list
        items: list = field(default_factory=list)

    @dataclass
    class Launched(Message):
        job_id: str
        command: str

    @dataclass
    class Notice(Message):
        text: str

    @dataclass
    class BackendMissing(Message):
        missing: backends.Missing

    DEFAULT_CSS = """
    #evals-body { height: 1fr; }
    #evals-main { height: 1fr; }
    #evals-left { width: 34; }
    #evals-runs { height: 1fr; }
    #evals-status { height: auto; max-height: 6; padding: 0 1; }
    EvalReport { width: 1fr; padding: 0 1; }
    #eval-report-head { height: auto; max-height: 3; }
    #eval-variants { height: auto; max-height: 8; }
    #eval-items { height: 1fr; }
    #eval-item-detail { height: auto; max-height: 4; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None
        self.jobs: dict[str, object] = {}
        self.states: dict[str, str] = {}
        self.report_job: str | None = None  # whose report is shown
        self.loading_report: str | None = None
        self.launched: list[str] = []
        self.visible = True
        self._poke = False
        self._last_error = ""

    def compose_body(self):
        with Vertical(id="evals-body"):
            yield Static("", id="evals-missing", classes="missing hidden")
            with Horizontal(classes="form-row", id="evals-form"):
                spec = Select([], prompt="spec / suite (evals/)", id="evals-spec")
                spec.border_title = "spec / suite"
                yield spec
                models = VariantsInput(id="evals-models")
                models.border_title = "variants (comma-separated model refs)"
                yield models
                limit = Input("", placeholder="all", id="evals-limit", type="integer")
                limit.border_title = "limit"
                yield limit
            with Horizontal(id="evals-main"):
                with Vertical(id="evals-left"):
                    runs = DataTable(id="evals-runs", cursor_type="row", zebra_stripes=True)
                    runs.border_title = "eval jobs"
                    yield runs
                    yield Static("select an eval job", id="evals-status")
                yield EvalReport(id="evals-report")

    def on_mount(self) -> None:
        runs = self.query_one("#evals-runs", DataTable)
        for col in RUN_COLUMNS:
            runs.add_column(col, key=col)
        self.query_one("#evals-limit", Input).styles.width = 12
        self.query_one("#evals-spec", Select).styles.width = 34
        self.query_one("#evals-models", VariantsInput).focus()
        self._load_specs()
        self._poll()

    def on_screen_suspend(self) -> None:
        self.visible = False

    def on_screen_resume(self) -> None:
        self.visible = True
        self._poke = True

    # --- workers (threads): read, check, launch; they only post messages ---------------------------

    @work(thread=True, exclusive=True, group="evals-specs", exit_on_error=False)
    def _load_specs(self) -> None:
        from pathlib import Path

        from tuneterm.core.evals.views import default_evals_dir, find_specs
        from tuneterm.core.settings import get_settings

        cwd = Path.cwd()
        specs = []
        for s in find_specs(default_evals_dir()):
            try:
                specs.append(str(Path(s).relative_to(cwd)))
            except ValueError:
                specs.append(s)
        self.post_message(self.SpecsLoaded(specs, get_settings().default_model))

    @work(thread=True, exclusive=True, group="evals-poll", exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        jobs = backends.load(JOBS, "Use `tuneterm eval` meanwhile.")
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        from tuneterm.core.evals.views import job_progress

        events: dict[str, list[dict]] = {}
        offsets: dict[str, int] = {}
        while not worker.is_cancelled:
            if self.visible:
                try:
                    listed = [j for j in reversed(jobs.list_jobs()) if str(j.kind) == "eval"]
                    self.post_message(self.RunsPolled(listed))
                    job_id = self.selected
                    if job_id:
                        new, offsets[job_id] = jobs.read_events(job_id, offsets.get(job_id, 0))
                        events[job_id] = events.get(job_id, []) + list(new)
                        info = jobs.get_job(job_id)
                        prog = job_progress(events[job_id])
                        error = str(info.error).splitlines()[-1][:200] if info.error else None
                        active = str(info.state) in ("queued", "running")
                        self.post_message(self.ProgressPolled(job_id, str(info.state), prog.line(active), error))
                except Exception as exc:  # a vanished or damaged job folder must not stop the poller
                    if self.selected:
                        offsets.pop(self.selected, None)
                        events.pop(self.selected, None)
                    self.post_message(self.Notice(f"{type(exc).__name__}: {exc}"))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not worker.is_cancelled and not self._poke:
                time.sleep(0.05)
            self._poke = False

    @work(thread=True, exclusive=True, group="evals-report", exit_on_error=False)
    def _load_report(self, job_id: str) -> None:
        from tuneterm.core.evals import report as report_mod
        from tuneterm.core.evals.views import item_rows, read_samples
        from tuneterm.core.jobs import get_job

        info = get_job(job_id)
        out = info.dir / "output"
        report = report_mod.load_report(out)
        samples = read_samples(out) if (out / "samples.jsonl").is_file() else []
        self.post_message(self.ReportLoaded(job_id, f"job {job_id}: {getattr(info, 'name', '') or ''}".strip(),
                                            report, report_mod.rows(report), report_mod.warnings(report),
                                            item_rows(samples, report)))

    @work(thread=True, exclusive=True, group="evals-launch", exit_on_error=False)
    def _launch(self, spec: str, models: list[str], limit: int | None) -> None:
        jobs = backends.load(JOBS, "Use `tuneterm eval` meanwhile.")
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        from pathlib import Path

        from tuneterm.core.evals.views import check_and_config

        config, command = check_and_config(spec, models, limit)  # a typo fails here, before a job exists
        job = jobs.create_job("eval", config, name=f"eval {Path(spec).stem}")
        jobs.launch(job.id)
        self.post_message(self.Launched(str(job.id), command))

    @work(thread=True, group="evals-cancel", exit_on_error=False)
    def _cancel(self, job_id: str) -> None:
        from tuneterm.core.jobs import cancel

        cancel(job_id)
        self.post_message(self.Notice(f"cancelling {job_id}"))

    # --- drawing (main thread) ----------------------------------------------------------------------

    @on(BackendMissing)
    def _missing(self, event: BackendMissing) -> None:
        note = self.query_one("#evals-missing", Static)
        note.update(event.missing.describe())
        note.remove_class("hidden")

    @on(SpecsLoaded)
    def _specs_loaded(self, event: SpecsLoaded) -> None:
        select = self.query_one("#evals-spec", Select)
        select.set_options([(s, s) for s in event.specs])
        if event.specs and select.is_blank():
            preferred = next((s for s in event.specs if s.rstrip("/").endswith("tickets")), event.specs[0])
            select.value = preferred
        models = self.query_one("#evals-models", VariantsInput)
        if not models.value:
            models.value = event.default_model

    @on(RunsPolled)
    def _runs(self, event: RunsPolled) -> None:
        table = self.query_one("#evals-runs", DataTable)
        self.jobs = {str(j.id): j for j in event.jobs}
        ids = list(self.jobs)
        current = [str(k.value) for k in table.rows]
        rows = {i: self._run_row(self.jobs[i]) for i in ids}
        if current != ids:
            keep = self.selected
            table.clear()
            for i in ids:
                table.add_row(*rows[i], key=i)
            if keep in ids:
                table.move_cursor(row=ids.index(keep))
        else:
            for i in ids:
                for col, value in zip(RUN_COLUMNS, rows[i]):
                    if table.get_cell(i, col) != value:
                        table.update_cell(i, col, value)
        for i in ids:
            self.states[i] = str(self.jobs[i].state)
        if self.selected not in self.jobs and ids:
            self._select(ids[table.cursor_row] if 0 <= table.cursor_row < len(ids) else ids[0])
        if not ids:
            self.selected = None
            self.query_one("#evals-status", Static).update("no eval jobs yet: pick a spec and variants, then ^l")

    def _run_row(self, job) -> tuple[str, str, str]:
        event = getattr(job, "last_event", None) or {}
        if event.get("type") == "eval_progress":
            progress = f"{event.get('done')}/{event.get('total')}"
        else:
            progress = str(event.get("type") or "-").replace("eval_", "")
        return (str(job.id), str(job.state), progress)

    @on(DataTable.RowHighlighted, "#evals-runs")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self._select(str(event.row_key.value))

    def _select(self, job_id: str | None) -> None:
        if job_id == self.selected:
            return
        self.selected = job_id
        self.query_one("#evals-status", Static).update(f"[b]{job_id}[/b] loading…" if job_id else "")
        self._poke = True

    @on(ProgressPolled)
    def _progress(self, event: ProgressPolled) -> None:
        if event.job_id != self.selected:
            return
        self.states[event.job_id] = event.state
        lines = [f"[b]{event.job_id}[/b] · {event.state}", event.line]
        if event.error:
            lines.append(f"[red]{_escape(event.error)}[/red]")
        if event.state == "succeeded":
            lines.append("report: ^o opens it")
        self.query_one("#evals-status", Static).update("\n".join(lines))
        if event.state == "succeeded" and self.report_job != event.job_id and self.loading_report != event.job_id:
            self.loading_report = event.job_id
            self._load_report(event.job_id)

    @on(ReportLoaded)
    def _report_loaded(self, event: ReportLoaded) -> None:
        self.loading_report = None
        self.report_job = event.job_id
        self.query_one(EvalReport).show(event.title, event.report, event.variant_rows, event.warnings, event.items)

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        self.launched.append(event.job_id)
        self.selected = None
        self._select(event.job_id)
        self.notify(f"eval job {event.job_id} started; it runs on when the workbench closes\n"
                    f"same from the CLI: {event.command}", title="launched", timeout=8)

    @on(Notice)
    def _notice(self, event: Notice) -> None:
        if event.text != self._last_error:
            self._last_error = event.text
            self.notify(event.text, severity="warning", timeout=6)

    # --- actions --------------------------------------------------------------------------------------

    def action_launch(self) -> None:
        spec = self.query_one("#evals-spec", Select).value
        models = self.query_one("#evals-models", VariantsInput).models
        limit_text = self.query_one("#evals-limit", Input).value.strip()
        if not isinstance(spec, str) or not models:
            self.notify("pick a spec and at least one variant first", severity="warning", timeout=4)
            return
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else None
        self.notify(f"checking {spec} with {len(models)} variant(s)…", timeout=3)
        self._launch(spec, models, limit)

    def action_open_report(self) -> None:
        job_id = self.selected
        if not job_id:
            self.notify("no eval job selected", severity="warning", timeout=3)
            return
        if self.states.get(job_id) != "succeeded":
            self.notify(f"job {job_id} is {self.states.get(job_id, '?')}: its report comes when it succeeds",
                        severity="warning", timeout=4)
            return
        self.loading_report = job_id
        self._load_report(job_id)
        self.query_one("#eval-variants", DataTable).focus()

    def action_toggle_items(self) -> None:
        view = self.query_one(EvalReport)
        view.set_filter(not view.only_disagree)

    def action_cancel_eval(self) -> None:
        job_id = self.selected
        if not job_id or self.states.get(job_id) not in ("queued", "running"):
            self.notify("no running eval job selected", severity="warning", timeout=3)
            return
        self._cancel(job_id)

    def action_refresh(self) -> None:
        self._poke = True
        self.query_one("#evals-models", VariantsInput).reload()


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
