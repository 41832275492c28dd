"""QuantizeScreen: pick a model and a method, edit the recipe, launch; follow; read the gate's report.

Two tabs. New: the model reference (completes job:ID artifacts), the method, the method's recipe
(recipes/<method>.toml) as a form with its comments as help, and a line of further
``key=value`` settings; ^l checks the config here, as `tuneterm quantize` does
(tuneterm.commands.quantize.build_config), then starts a detached ``quantize`` job through
tuneterm.core.jobs and follows it. Reports: every quantize job with its gate verdict, and the
selected job's quality report (output/quality.json: size, load time, TTFT, tok/s, perplexity,
KL, top-1 agreement, exact match, pass/fail) or its progress while it runs.

A thread worker re-reads the job folders about once a second while the screen is shown; it
posts what it read and never touches widgets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Select, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from tuneterm.tui import backends
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.model_input import ModelInput
from tuneterm.tui.widgets.quant_report import QuantReport, phase_line
from tuneterm.tui.widgets.recipe_panel import RecipePanel

JOBS = "tuneterm.core.jobs"
# The same list as tuneterm.core.quantize_config.METHODS (not imported here: the first paint
# must not wait for it); recipes/<method>.toml exists for each.
METHODS = ("int8-dynamic", "int8-weight-only", "bnb-int8", "bnb-nf4", "bnb-fp4", "gguf")
CHOICES = {
    "quant.device": ("auto", "cpu", "cuda"),
    "quant.compute_dtype": ("float32", "bfloat16", "float16"),
    "quant.outtype": ("q8_0", "f16", "f32"),
    "quant.tokenizer_pre": ("auto", "smollm", "gpt2"),
}
COLUMNS = (("id", "job"), ("method", "method"), ("model", "model"), ("state", "state"), ("gate", "gate"))


@dataclass
class QuantJob:
    """One quantize job as the Reports table shows it."""

    id: str
    state: str
    method: str
    model: str
    gate: str  # "passed" | "FAILED" | "-"
    error: str | None = None
    model_ref: str | None = None


class QuantizeScreen(WorkbenchScreen):
    MODE = "quantize"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="quantize.launch"),
        Binding("ctrl+r", "reset", "Reset recipe", id="quantize.reset"),
        Binding("ctrl+n", "tab('qz-new')", "New", id="quantize.new"),
        Binding("ctrl+o", "tab('qz-reports')", "Reports", id="quantize.reports"),
    ]

    @dataclass
    class RecipeLoaded(Message):
        method: str
        flat: dict
        comments: dict
        header: str

    @dataclass
    class Launched(Message):
        job_id: str
        command: str

    @dataclass
    class JobsPolled(Message):
        jobs: list[QuantJob]

    @dataclass
    class DetailPolled(Message):
        job_id: str
        state: str
        events: list[dict]
        reset: bool
        report: dict | None
        error: str | None

    @dataclass
    class PollFailed(Message):
        error: BaseException

    @dataclass
    class BackendMissing(Message):
        missing: backends.Missing

    def __init__(self) -> None:
        super().__init__()
        self.method = METHODS[0]
        self.launched: list[str] = []
        self.jobs: dict[str, QuantJob] = {}
        self.selected: str | None = None
        self.events: dict[str, list[dict]] = {}
        self.reports: dict[str, dict] = {}
        self.visible = True
        self._poke = False
        self._last_error = ""

    def compose_body(self):
        with TabbedContent(id="qz-tabs", initial="qz-new"):
            with TabPane("New", id="qz-new"):
                yield Static("", id="qz-missing", classes="missing hidden")
                with Horizontal(classes="form-row"):
                    model = ModelInput(prefill=True, id="qz-model")
                    model.border_title = "model"
                    yield model
                    method = Select([(m, m) for m in METHODS], value=self.method, allow_blank=False, id="qz-method")
                    method.border_title = "method"
                    yield method
                yield RecipePanel(hint="tab moves; ^l launches", id="qz-recipe")
                extra = Input(id="qz-extra", compact=True,
                              placeholder="more settings: gate.min_top1_agreement=0.9 gate.data=tickets …")
                yield extra
                yield Static("no job launched from here yet", id="qz-progress")
            with TabPane("Reports", id="qz-reports"):
                yield DataTable(id="qz-jobs", cursor_type="row", zebra_stripes=True)
                yield Static("select a quantize job", id="qz-status")
                with VerticalScroll(id="qz-report-scroll"):
                    yield QuantReport(id="qz-report")

    def on_mount(self) -> None:
        table = self.query_one("#qz-jobs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#qz-model", Input).focus()
        self.after_first_paint(lambda: self._load_recipe(self.method))
        self.after_first_paint(self._poll)

    def on_screen_suspend(self) -> None:
        self.visible = False

    def on_screen_resume(self) -> None:
        self.visible = True
        self._poke = True
        self.after_first_paint(self.query_one(ModelInput).reload)  # jobs may have finished: new job:ID refs

    # --- workers: read, post; never touch widgets --------------------------------------------------

    @work(thread=True, exclusive=True, group="qz-recipe", exit_on_error=False)
    def _load_recipe(self, method: str) -> None:
        from tuneterm.core.recipes import flatten
        from tuneterm.core.recipe_comments import read_comments
        from tuneterm.core import quantize_config as qconfig  # torch-free (the command uses it too)

        path = qconfig.recipes_dir() / f"{method}.toml"
        recipe = qconfig.load_recipe(path)
        header, comments = read_comments(path)
        self.post_message(self.RecipeLoaded(method, flatten(recipe), comments, header))

    @work(thread=True, exclusive=True, group="qz-launch", exit_on_error=False)
    def _launch(self, model: str, method: str, overrides: list[str]) -> None:
        jobs = backends.load(JOBS, "Use `tuneterm quantize` once the jobs module has landed.")
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        from tuneterm.core.jobs.plan import plan_quantize

        # tuneterm.core.jobs.plan holds the checks of `tuneterm quantize`: a typo or a missing job:ID fails here
        job = plan_quantize(model, method=method, overrides=overrides, name=f"{method} {model}").create()
        jobs.launch(job.id)
        command = " ".join(["tuneterm quantize", _quote(model), "--method", method, *map(_quote, overrides)])
        self.post_message(self.Launched(job.id, command))

    @work(thread=True, exclusive=True, group="qz-poll", exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        jobs = backends.load(JOBS, "Use `tuneterm quantize` and `tuneterm jobs` meanwhile.")
        if isinstance(jobs, backends.Missing):
            self.post_message(self.BackendMissing(jobs))
            return
        from tuneterm.core.settings import get_settings

        interval = max(0.2, float(get_settings().job_poll_seconds))
        specs: dict[str, tuple[str, str]] = {}
        offsets: dict[str, int] = {}
        reports: dict[str, tuple[float, dict]] = {}
        while not worker.is_cancelled:
            if self.visible:
                self._poll_once(jobs, specs, offsets, reports)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not worker.is_cancelled and not self._poke:
                time.sleep(0.05)
            self._poke = False

    def _poll_once(self, jobs, specs: dict, offsets: dict, reports: dict) -> None:
        try:
            listed = [j for j in reversed(jobs.list_jobs()) if j.kind == "quantize"]  # newest first
            rows = []
            for info in listed:
                if info.id not in specs:
                    try:
                        config = jobs.read_spec(info.dir).get("config", {})
                        specs[info.id] = (str(config.get("method", "?")), str(config.get("model", "?")))
                    except Exception:  # a damaged spec: the row shows "?" and the next poll retries
                        pass
                method, model = specs.get(info.id, ("?", "?"))
                report = _read_report(info.dir, reports, info.id)
                gate = "-" if report is None else ("passed" if report.get("passed") else "FAILED")
                rows.append(QuantJob(info.id, str(info.state), method, model, gate, info.error, info.model_ref))
        except Exception as exc:  # a damaged folder must not stop the poller
            self.post_message(self.PollFailed(exc))
            return
        self.post_message(self.JobsPolled(rows))
        for job_id in dict.fromkeys(j for j in (self.selected, self.launched[-1] if self.launched else None) if j):
            info = next((j for j in rows if j.id == job_id), None)
            if info is None:
                continue
            reset = job_id not in offsets
            try:
                new, offsets[job_id] = jobs.read_events(job_id, offsets.get(job_id, 0))
            except Exception as exc:
                offsets.pop(job_id, None)
                self.post_message(self.PollFailed(exc))
                continue
            report = reports.get(job_id, (0, None))[1]
            self.post_message(self.DetailPolled(job_id, info.state, list(new), reset, report, info.error))

    # --- events (main thread) ---------------------------------------------------------------------

    @on(BackendMissing)
    def _missing(self, event: BackendMissing) -> None:
        note = self.query_one("#qz-missing", Static)
        note.update(event.missing.describe())
        note.remove_class("hidden")

    @on(RecipeLoaded)
    async def _recipe_loaded(self, event: RecipeLoaded) -> None:
        if event.method == self.method:
            await self.query_one(RecipePanel).show(f"recipes/{event.method}.toml", event.header, event.flat,
                                                   event.comments, CHOICES)

    @on(Select.Changed, "#qz-method")
    def _method_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.method:
            self.method = event.value
            self._load_recipe(event.value)

    def action_reset(self) -> None:
        self._load_recipe(self.method)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "qz-reports":
            self.query_one("#qz-jobs", DataTable).focus()
        else:
            self.query_one("#qz-model", Input).focus()
        self._poke = True

    def settings(self) -> list[str]:
        """The form's edited settings, then the extra ``key=value`` items, as the command takes them."""
        import shlex

        extra = self.query_one("#qz-extra", Input).value
        try:  # quotes stay: the value is read as TOML/JSON, so gate.prompts=["Hi"] keeps its string
            more = shlex.split(extra, posix=False)
        except ValueError:
            more = extra.split()
        return self.query_one(RecipePanel).overrides() + more

    def action_launch(self) -> None:
        model = self.query_one("#qz-model", Input).value.strip()
        if not model:
            self.notify("type a model reference first (tab completes job:ID)", severity="warning", timeout=4)
            return
        if self.query_one(RecipePanel).form is None:
            self.notify("the recipe is still loading", severity="warning", timeout=3)
            return
        self.notify(f"checking and launching {self.method} of {model}…", timeout=3)
        self._launch(model, self.method, self.settings())

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        self.launched.append(event.job_id)
        self.query_one("#qz-progress", Static).update(f"job {event.job_id}: started")
        self.notify(f"job {event.job_id} started; its report shows under Reports (^o)\n"
                    f"same from the CLI: {event.command}", title="launched", timeout=8)
        self._poke = True

    @on(JobsPolled)
    def _show_jobs(self, event: JobsPolled) -> None:
        self._last_error = ""
        self.jobs = {j.id: j for j in event.jobs}
        table = self.query_one("#qz-jobs", DataTable)
        ids = [j.id for j in event.jobs]
        current = [str(k.value) for k in table.rows]
        if ids != current:
            keep = self.selected
            table.clear()
            for j in event.jobs:
                table.add_row(*self._cells(j), key=j.id)
            if keep in ids:
                table.move_cursor(row=ids.index(keep))
        else:
            for j in event.jobs:
                for (key, _label), value in zip(COLUMNS, self._cells(j)):
                    table.update_cell(j.id, key, value)
        if not event.jobs:
            self.query_one("#qz-status", Static).update("no quantize jobs yet: ^n, pick a model, ^l")
            self.query_one(QuantReport).show_message("")
        elif self.selected not in self.jobs:
            self._select(ids[table.cursor_row] if 0 <= table.cursor_row < len(ids) else ids[0])

    @staticmethod
    def _cells(job: QuantJob) -> tuple:
        from rich.text import Text

        from tuneterm.tui.widgets.job_table import STATE_STYLE

        gate_style = {"passed": "green", "FAILED": "bold red"}.get(job.gate, "dim")
        model = job.model if len(job.model) <= 24 else "…" + job.model[-23:]
        return (job.id, job.method, model, Text(job.state, style=STATE_STYLE.get(job.state, "")),
                Text(job.gate, style=gate_style))

    @on(DataTable.RowHighlighted, "#qz-jobs")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self._select(str(event.row_key.value))

    def _select(self, job_id: str) -> None:
        if job_id == self.selected:
            return
        self.selected = job_id
        self.query_one("#qz-status", Static).update(f"{job_id}: reading…")
        self.query_one(QuantReport).show_message("")
        self._poke = True

    @on(DetailPolled)
    def _show_detail(self, event: DetailPolled) -> None:
        events = [] if event.reset else self.events.get(event.job_id, [])
        self.events[event.job_id] = events = events + event.events
        if event.report is not None:
            self.reports[event.job_id] = event.report
        line = phase_line(events, event.state)
        if self.launched and event.job_id == self.launched[-1]:
            verdict = ""
            if event.report is not None:
                verdict = " · gate " + ("passed" if event.report.get("passed") else "FAILED")
            self.query_one("#qz-progress", Static).update(f"job {event.job_id} · {event.state}{verdict} · {line}")
        if event.job_id != self.selected:
            return
        job = self.jobs.get(event.job_id)
        status = f"{event.job_id} · {event.state} · {line}"
        if job is not None and job.model_ref:
            status += f" · use it as {job.model_ref}"
        self.query_one("#qz-status", Static).update(status)
        view = self.query_one(QuantReport)
        if event.report is not None:
            if view.report is not event.report:
                view.show_report(event.report, job.model_ref if job and job.model_ref else "")
        elif event.state in ("queued", "running"):
            view.show_message("the report appears when the gate has measured the model")
        else:
            reason = (event.error or "").strip().splitlines()[-1:] or [""]
            view.show_message(f"no quality report: the job {event.state} before the gate ran. {reason[0]}".strip())

    @on(PollFailed)
    def _poll_failed(self, event: PollFailed) -> None:
        text = str(event.error)
        if text != self._last_error:  # once per distinct problem, not once a second
            self._last_error = text
            self.report_error(event.error)


def _read_report(folder, cache: dict, job_id: str) -> dict | None:
    """output/quality.json, re-read only when it changes; None while there is none."""
    path = folder / "output" / "quality.json"
    try:
        mtime = path.stat().st_mtime
    except OSError:
        cache.pop(job_id, None)
        return None
    if job_id in cache and cache[job_id][0] == mtime:
        return cache[job_id][1]
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # being replaced (atomic writes make this rare); the next poll reads it
    if not isinstance(report, dict):
        return None
    cache[job_id] = (mtime, report)
    return report


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
