"""QuantizeScreen: pick a model and a method, edit the recipe, launch; follow; read the gate's report.

Two tabs. New: the model reference (completes job:ID artifacts), the method, the method's recipe
(recipes/<method>.toml) as a form with its comments as help, and a line of further
``key=value`` settings; ^l checks the config here, as `tuneterm quantize` does
(tuneterm.commands.quantize.build_config), then starts a detached ``quantize`` job through
tuneterm.core.jobs and follows it. Reports: every quantize job with its gate verdict, and the
selected job's quality report (output/quality.json: size, load time, TTFT, tok/s, perplexity,
KL, top-1 agreement, exact match, pass/fail) or its progress while it runs.

The app's job watcher (tuneterm.tui.job_watch) reads the job folders; this screen follows the
selected job and the one it launched, and only draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Select, Static, TabbedContent, TabPane

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.keyed_table import KeyedTable
from tuneterm.tui.widgets.model_input import ModelInput
from tuneterm.tui.widgets.quant_report import QuantReport, phase_line
from tuneterm.tui.widgets.recipe_panel import RecipePanel

# The same list as tuneterm.core.quantize_config.METHODS (not imported here: the first paint
# must not wait for it); recipes/<method>.toml exists for each.
METHODS = ("int8-dynamic", "int8-weight-only", "bnb-int8", "bnb-nf4", "bnb-fp4", "gguf")
CHOICES = {
    "quant.device": ("auto", "cpu", "cuda"),
    "quant.compute_dtype": ("float32", "bfloat16", "float16"),
    "quant.outtype": ("q8_0", "f16", "f32", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs"),
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
    CONTENT = "#qz-tabs Tabs"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="quantize.launch"),
        Binding("ctrl+r", "reset", "Reset recipe", id="quantize.reset"),
        Binding("ctrl+b", "tab('qz-new')", "New", id="quantize.new"),
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

    def __init__(self) -> None:
        super().__init__()
        self.method = METHODS[0]
        self.launched: list[str] = []
        self.jobs: dict[str, QuantJob] = {}
        self.selected: str | None = None
        self.events: dict[str, list[dict]] = {}
        self.reports: dict[str, dict] = {}
        self._specs: dict[str, tuple[str, str]] = {}  # job id -> (method, model), read once
        self._report_cache: dict[str, tuple[float, dict]] = {}

    def compose_body(self):
        with TabbedContent(id="qz-tabs", initial="qz-new"):
            with TabPane("New", id="qz-new"):
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
                yield KeyedTable(COLUMNS, id="qz-jobs")
                yield Static("select a quantize job", id="qz-status")
                with VerticalScroll(id="qz-report-scroll"):
                    yield QuantReport(id="qz-report")

    def on_mount(self) -> None:
        self.after_first_paint(lambda: self._load_recipe(self.method))
        self.watch_jobs(self._jobs_seen_here)

    def on_screen_resume(self) -> None:
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
        from tuneterm.core import jobs
        from tuneterm.core.jobs.plan import plan_quantize

        # tuneterm.core.jobs.plan holds the checks of `tuneterm quantize`: a typo or a missing job:ID fails here
        job = plan_quantize(model, method=method, overrides=overrides, name=f"{method} {model}").create()
        jobs.launch(job.id)
        command = " ".join(["tuneterm quantize", _quote(model), "--method", method, *map(_quote, overrides)])
        self.post_message(self.Launched(job.id, command))

    # --- jobs, from the app's watcher (main thread) --------------------------------------------------

    def _quant_job(self, info) -> QuantJob:
        from tuneterm.core import jobs

        if info.id not in self._specs:
            try:
                config = jobs.read_spec(info.dir).get("config", {})
                self._specs[info.id] = (str(config.get("method", "?")), str(config.get("model", "?")))
            except Exception:  # noqa: BLE001 - a damaged spec: the row shows "?" and the next read retries
                pass
        method, model = self._specs.get(info.id, ("?", "?"))
        report = _read_report(info.dir, self._report_cache, info.id)
        gate = "-" if report is None else ("passed" if report.get("passed") else "FAILED")
        return QuantJob(info.id, str(info.state), method, model, gate, info.error, info.model_ref)

    def _jobs_seen_here(self, seen) -> None:
        rows = [self._quant_job(info) for info in seen.of_kind("quantize")]
        self.jobs = {j.id: j for j in rows}
        table = self.query_one("#qz-jobs", KeyedTable)
        table.sync({j.id: self._cells(j) for j in rows})
        if not rows:
            self.query_one("#qz-status", Static).update("no quantize jobs yet: ^b, pick a model, ^l")
            self.query_one(QuantReport).show_message("")
        elif self.selected not in self.jobs:
            self._select(table.selected_key or rows[0].id)
        for job_id in dict.fromkeys(j for j in (self.selected, self.launched[-1] if self.launched else None) if j):
            job = self.jobs.get(job_id)
            if job is not None and job_id in seen.events:
                report = self._report_cache.get(job_id, (0, None))[1]
                self._show_detail(job_id, job.state, seen.events[job_id], report, job.error)

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
            self.focus_content()  # the tabs, not the model field: the number keys keep switching screens
        self.poke_jobs()

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
        self._follow()

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
        self._follow()

    def _follow(self) -> None:
        self.follow_jobs(self.selected, self.launched[-1] if self.launched else None)

    def _show_detail(self, job_id: str, state: str, events: list[dict], report: dict | None,
                     error: str | None) -> None:
        self.events[job_id] = events
        if report is not None:
            self.reports[job_id] = report
        line = phase_line(events, state)
        if self.launched and job_id == self.launched[-1]:
            verdict = ""
            if report is not None:
                verdict = " · gate " + ("passed" if report.get("passed") else "FAILED")
            self.query_one("#qz-progress", Static).update(f"job {job_id} · {state}{verdict} · {line}")
        if job_id != self.selected:
            return
        job = self.jobs.get(job_id)
        status = f"{job_id} · {state} · {line}"
        if job is not None and job.model_ref:
            status += f" · use it as {job.model_ref}"
        self.query_one("#qz-status", Static).update(status)
        view = self.query_one(QuantReport)
        if report is not None:
            if view.report is not report:
                view.show_report(report, job.model_ref if job and job.model_ref else "")
        elif state in ("queued", "running"):
            view.show_message("the report appears when the gate has measured the model")
        else:
            reason = (error or "").strip().splitlines()[-1:] or [""]
            view.show_message(f"no quality report: the job {state} before the gate ran. {reason[0]}".strip())


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
