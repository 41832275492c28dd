"""EvalsScreen: pick a spec or suite and the variants, launch the eval as a job, follow it, read
the report: the variants with 95% intervals and the paired comparison, and the items where the
variants disagree.

The launch makes the checks `tuneterm eval` makes before a model loads (specs, data, metrics,
variants, few-shot pools; torch-free, in a worker), then writes an ``eval`` job and starts it
detached (tuneterm.workers.kinds.eval): it keeps running when the workbench closes. The app's job
watcher (tuneterm.tui.job_watch) reads the eval jobs and the selected job's events; a finished
job's report is read in a worker. The screen only draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from rich.markup import escape
from textual.widgets import DataTable, Input, Select, Static

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.keyed_table import KeyedTable
from tuneterm.tui.widgets.eval_report import EvalReport
from tuneterm.tui.widgets.eval_variants import VariantsInput
from tuneterm.tui.widgets.vote_board import VoteBoard

RUN_COLUMNS = (("id", "job"), ("state", "state"), ("progress", "progress"))


class EvalsScreen(WorkbenchScreen):
    MODE = "evals"
    CONTENT = "#evals-runs"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="evals.launch"),
        Binding("ctrl+o", "open_report", "Open report", id="evals.open"),
        Binding("ctrl+f", "toggle_items", "Disagree/all", id="evals.toggle"),
        Binding("ctrl+b", "cancel_eval", "Cancel job", id="evals.cancel"),
        Binding("ctrl+r", "refresh", "Refresh", id="evals.refresh", show=False),
        Binding("ctrl+y", "toggle_votes", "Votes", id="evals.votes", show=False),  # 80 columns: these two in the palette
        # priority: it reaches the export from the launch form's fields too (Input would take it as "end")
        Binding("ctrl+e", "export_votes", "Votes to data", id="evals.export_votes", show=False, priority=True),
    ]

    @dataclass
    class SpecsLoaded(Message):
        specs: list[str]
        default_model: str

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
    class VotesExported(Message):
        kind: str
        name: str
        count: int
        path: str

    DEFAULT_CSS = """
    #evals-body { height: 1fr; }
    #evals-main { height: 1fr; }
    #evals-left { width: 34; }
    #evals-runs { height: 1fr; }
    #evals-status { height: auto; max-height: 6; padding: 0 1; }
    EvalReport { width: 1fr; padding: 0 1; }
    EvalReport.-hidden { display: none; }
    #evals-left.-hidden { display: none; }
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
        self._last_notice = ""

    def compose_body(self):
        with Vertical(id="evals-body"):
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
                    runs = KeyedTable(RUN_COLUMNS, id="evals-runs")
                    runs.border_title = "eval jobs"
                    yield runs
                    yield Static("select an eval job", id="evals-status")
                yield EvalReport(id="evals-report")
                yield VoteBoard(id="evals-votes", classes="-hidden")

    def on_mount(self) -> None:
        self.query_one("#evals-limit", Input).styles.width = 12
        self.query_one("#evals-spec", Select).styles.width = 34
        self.after_first_paint(self._load_specs)
        self.watch_jobs(self._jobs_seen_here)

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
        from pathlib import Path

        from tuneterm.core import jobs
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

    @work(thread=True, exclusive=True, group="evals-votes-export", exit_on_error=False)
    def _export_votes(self, kind: str, name: str) -> None:
        from tuneterm.core import votes

        count, rec = votes.export(name, kind)  # nothing to export / a taken name: a UsageError, shown
        self.post_message(self.VotesExported(kind, name, count, str(getattr(rec, "path", ""))))

    # --- drawing (main thread) ----------------------------------------------------------------------

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

    def _jobs_seen_here(self, seen) -> None:
        from tuneterm.core.evals.views import job_progress

        self.jobs = {str(j.id): j for j in seen.of_kind("eval")}
        ids = list(self.jobs)
        table = self.query_one("#evals-runs", KeyedTable)
        table.sync({i: self._run_row(self.jobs[i]) for i in ids})
        for i in ids:
            self.states[i] = str(self.jobs[i].state)
        if not ids:
            self.selected = None
            self.query_one("#evals-status", Static).update("no eval jobs yet: pick a spec and variants, then ^l")
            return
        if self.selected not in self.jobs:
            self._select(table.selected_key or ids[0])
            return
        info = self.jobs[self.selected]
        if self.selected in seen.events:
            state = str(info.state)
            error = str(info.error).splitlines()[-1][:200] if info.error else None
            line = job_progress(seen.events[self.selected]).line(state in ("queued", "running"))
            self._progress(self.selected, state, line, error)

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
        self.follow_jobs(job_id)

    def _progress(self, job_id: str, state: str, line: str, error: str | None) -> None:
        lines = [f"[b]{job_id}[/b] · {state}", escape(line)]
        if error:
            lines.append(f"[red]{escape(error)}[/red]")
        if state == "succeeded":
            lines.append("report: ^o opens it")
        self.query_one("#evals-status", Static).update("\n".join(lines))
        if state == "succeeded" and self.report_job != job_id and self.loading_report != job_id:
            self.loading_report = job_id
            self._load_report(job_id)

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

    @on(VotesExported)
    def _votes_exported(self, event: VotesExported) -> None:
        what = "preference pair" if event.kind == "dpo" else "example"
        text = f"{event.count} {what}(s) from the human votes → dataset {event.name} ({event.path})"
        if event.kind == "dpo":
            text += f"\ntrain on them: tuneterm train --method dpo --data {event.name} --model BASE"
        self.notify(text, title="votes exported", timeout=8)

    @on(Notice)
    def _notice(self, event: Notice) -> None:
        if event.text != self._last_notice:
            self._last_notice = event.text
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
        self.poke_jobs()
        self.query_one("#evals-models", VariantsInput).reload()

    def action_toggle_votes(self) -> None:
        """Show the blind-vote win rates and ranking in place of the report (and back)."""
        board = self.query_one(VoteBoard)
        showing = board.has_class("-hidden")
        board.set_class(not showing, "-hidden")
        self.query_one(EvalReport).set_class(showing, "-hidden")
        self.query_one("#evals-left").set_class(showing, "-hidden")  # the table gets the whole width
        if showing:
            board.load()

    def action_export_votes(self) -> None:
        """Ask "dpo NAME" or "sft NAME" and write the human votes into that workspace dataset."""
        from tuneterm.tui.screens.modals import PromptModal

        def chosen(line: str | None) -> None:
            if not line:
                return
            parts = line.split()
            if len(parts) != 2 or parts[0].lower() not in ("dpo", "sft"):
                self.notify(f"expected 'dpo NAME' or 'sft NAME', got {line!r}", severity="warning", timeout=5)
                return
            self._export_votes(parts[0].lower(), parts[1])

        self.app.push_screen(PromptModal("Export the human votes as a dataset: dpo NAME (preference pairs) "
                                         "or sft NAME (prompt + chosen answer)", "dpo votes-prefs"), chosen)
