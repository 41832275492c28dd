"""DatasetsScreen: the workspace's datasets; preview, problems, token lengths and the loss mask.

Left, the list (rows, splits, rejected rows). Right, four tabs for the selected dataset (or a
file picked with "validate only"):

- Preview: one example at a time rendered as chat turns ([ and ] move; bad rows show raw);
- Problems: the validation report; enter on a problem jumps to its line in Preview;
- Lengths: tokens per example with the chosen model's template, against a cutoff;
- Mask: the tokens of the current example; the trained (assistant) ones are highlighted.

Files are read and validated in thread workers through tuneterm.core.datasets. Token lengths
and the mask need the model's tokenizer (transformers), so they come from a helper process
(tuneterm.workers.mask_preview): this process never imports torch & co.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.lazy import Lazy
from textual.message import Message
from textual.widgets import DataTable, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.dataset_table import DatasetTable
from tuneterm.tui.widgets.lengths_panel import LengthsPanel
from tuneterm.tui.widgets.mask_panel import MaskPanel
from tuneterm.tui.widgets.problems_panel import ProblemsPanel
from tuneterm.tui.widgets.turn_view import ChatTurnView



class DatasetsScreen(WorkbenchScreen):
    MODE = "datasets"
    CONTENT = "DatasetTable"
    BINDINGS = [
        Binding("i", "import_dataset", "Import", id="datasets.import"),
        Binding("v", "validate", "Validate", id="datasets.validate"),
        Binding("left_square_bracket", "step(-1)", "Prev", id="datasets.prev", key_display="["),
        Binding("right_square_bracket", "step(1)", "Next", id="datasets.next", key_display="]"),
        Binding("m", "choose_model", "Model", id="datasets.model"),
        Binding("s", "split", "Split", id="datasets.split"),
        Binding("p", "tab('tab-preview')", "Preview", id="datasets.preview", show=False),
        Binding("e", "tab('tab-problems')", "Problems", id="datasets.problems", show=False),
        Binding("l", "tab('tab-lengths')", "Lengths", id="datasets.lengths", show=False),
        Binding("t", "tab('tab-mask')", "Mask", id="datasets.mask", show=False),
        Binding("g", "goto_line", "Go to line", id="datasets.goto", show=False),
        Binding("x", "remove", "Remove", id="datasets.remove", show=False),
        Binding("ctrl+r", "reload", "Reload", id="datasets.reload", show=False),
    ]

    @dataclass
    class ModelLoaded(Message):
        model: str

    @dataclass
    class Listed(Message):
        records: list

    @dataclass
    class RowsLoaded(Message):
        source: str
        path: Path
        records: list
        truncated: bool

    @dataclass
    class Validated(Message):
        source: str
        report: object

    @dataclass
    class LengthsMeasured(Message):
        source: str
        model: str
        lengths: list[list[int]]
        limit: int | None

    @dataclass
    class MaskReady(Message):
        source: str
        line: int
        model: str
        tokens: list

    @dataclass
    class Changed(Message):
        """An import, split or removal finished; ``select`` is the dataset to show."""

        text: str
        select: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.source: str | None = None  # a dataset name, or a file path (validate only)
        self.path: Path | None = None
        self.records: list = []
        self.index = 0
        self.report = None
        self.lengths: list[list[int]] = []
        self.model = ""

    def compose_body(self):
        with Horizontal(id="ds-body"):
            with Vertical(id="ds-left"):
                yield DatasetTable(id="ds-table")
                yield Static("i: import a file", id="ds-hint", classes="hint")
            with TabbedContent(id="ds-tabs", initial="tab-preview"):
                with TabPane("Preview", id="tab-preview"):
                    yield Static("no dataset selected", id="preview-head", classes="pane-title")
                    yield ChatTurnView(id="preview")
                # The hidden tabs' panels are built after the first paint (Lazy); until then a
                # query finds none, so updates go through _each() and a panel reads the screen's
                # state when it mounts.
                with TabPane("Problems", id="tab-problems"):
                    yield Lazy(ProblemsPanel(id="problems-panel"))
                with TabPane("Lengths", id="tab-lengths"):
                    yield Lazy(LengthsPanel(id="lengths-panel"))
                with TabPane("Mask", id="tab-mask"):
                    yield Lazy(MaskPanel(id="mask-panel"))

    def on_mount(self) -> None:
        self.after_first_paint(self._after_first_paint)

    def _after_first_paint(self) -> None:
        self._load_model()
        self._list()

    @property
    def names(self) -> list[str]:
        return self.query_one(DatasetTable).names

    def _each(self, cls):
        """The panel of type ``cls`` if it is mounted yet (a list of zero or one)."""
        return list(self.query(cls))

    # --- threads: read, post; never touch widgets --------------------------------------------------

    @work(thread=True, exclusive=True, group="ds-model", exit_on_error=False)
    def _load_model(self) -> None:
        from tuneterm.core.settings import get_settings

        self.post_message(self.ModelLoaded(get_settings().default_model))

    @on(ModelLoaded)
    def _model_loaded(self, event: ModelLoaded) -> None:
        if not self.model:
            self.model = event.model
            self._refresh_tab()

    @work(thread=True, exclusive=True, group="ds-list", exit_on_error=False)
    def _list(self) -> None:
        from tuneterm.core.datasets import store

        self.post_message(self.Listed(list(store.list_datasets())))

    @work(thread=True, exclusive=True, group="ds-rows", exit_on_error=False)
    def _load_rows(self, source: str) -> None:
        from tuneterm.tui.dataset_paths import read_records, resolve

        path = resolve(source, split=None)
        records, truncated = read_records(path)
        if not get_current_worker().is_cancelled:
            self.post_message(self.RowsLoaded(source, path, records, truncated))

    @work(thread=True, exclusive=True, group="ds-validate", exit_on_error=False)
    def _validate(self, source: str, path: Path) -> None:
        from tuneterm.core.datasets.validate import validate_file

        report = validate_file(path)  # no model: token limits come from the helper process
        if not get_current_worker().is_cancelled:
            self.post_message(self.Validated(source, report))

    @work(thread=True, exclusive=True, group="ds-lengths", exit_on_error=False)
    def _measure(self, source: str, path: Path, model: str) -> None:
        from tuneterm.tui.mask_client import client_for

        answer = client_for(model).request({"op": "lengths", "path": str(path)})
        if not get_current_worker().is_cancelled:
            self.post_message(self.LengthsMeasured(source, model, answer["lengths"], answer.get("limit")))

    @work(thread=True, exclusive=True, group="ds-mask", exit_on_error=False)
    def _mask(self, source: str, line: int, example: dict, model: str) -> None:
        from tuneterm.tui.mask_client import client_for

        answer = client_for(model).request({"op": "mask", "example": example})
        if not get_current_worker().is_cancelled:
            self.post_message(self.MaskReady(source, line, model, answer["tokens"]))

    @work(thread=True, group="ds-change", exit_on_error=False)
    def _change(self, verb: str, **kw) -> None:
        from tuneterm.core.datasets import store

        if verb == "import":
            rec = store.import_dataset(kw["path"], name=kw.get("name"), skip_invalid=kw.get("skip_invalid", False))
            rejected = f", {rec.n_rejected} rows rejected" if rec.n_rejected else ""
            self.post_message(self.Changed(f"imported {rec.name}: {rec.n_examples} examples{rejected}", rec.name))
        elif verb == "split":
            from tuneterm.core.datasets.split import split_dataset

            split_dataset(kw["name"])
            rec = store.get(kw["name"])
            shown = ", ".join(f"{k} {v}" for k, v in rec.splits.items())
            self.post_message(self.Changed(f"split {rec.name}: {shown}", rec.name))
        elif verb == "remove":
            store.remove(kw["name"])
            self.post_message(self.Changed(f"removed {kw['name']}", None))

    # --- the list ---------------------------------------------------------------------------------

    @on(Listed)
    def _show_list(self, event: Listed) -> None:
        keep = self.source
        self.query_one(DatasetTable).show(event.records, keep)
        hint = self.query_one("#ds-hint", Static)
        hint.update("ok: ✓ clean, ! warnings, ✗ errors, · not validated · i: import" if self.names else
                    "no datasets yet: i imports a file (make run imports the samples)")
        if self.names and keep is None:
            self._open(self.names[0])

    @on(DataTable.RowHighlighted, "#ds-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.source:
            self._open(str(event.row_key.value))

    def _open(self, source: str) -> None:
        self.source, self.path, self.records, self.index, self.report, self.lengths = source, None, [], 0, None, []
        self.query_one("#preview-head", Static).update(f"{source}: reading…")
        for problems in self._each(ProblemsPanel):
            problems.validating()
        for lengths in self._each(LengthsPanel):
            lengths.clear()
        for mask in self._each(MaskPanel):
            mask.show_message("")
        self._load_rows(source)

    @on(RowsLoaded)
    def _rows_loaded(self, event: RowsLoaded) -> None:
        if event.source != self.source:
            return
        self.path, self.records = event.path, event.records
        self.index = 0
        self._show_current()
        self._validate(event.source, event.path)
        self._refresh_tab()

    # --- preview ----------------------------------------------------------------------------------

    def _show_current(self) -> None:
        view = self.query_one(ChatTurnView)
        head = self.query_one("#preview-head", Static)
        if not self.records:
            head.update(f"{self.source}: no rows")
            view.remove_children()
            return
        rec = self.records[self.index]
        problems = [f"{p.severity}: {p.kind}: {p.message}" for p in rec.problems]
        if self.report is not None:
            problems += [f"{p.severity}: {p.kind}: {p.message}" for p in self.report.problems
                         if p.line == rec.line and f"{p.severity}: {p.kind}: {p.message}" not in problems]
        flag = f" · {len(problems)} problem(s)" if problems else ""
        head.update(f"{self.source} · {rec.unit} {rec.line} · example {self.index + 1}/{len(self.records)}{flag}")
        head.set_class(bool(problems), "-problem")
        if rec.example is None or not isinstance(rec.example, dict):
            view.show_raw(rec.raw.decode("utf-8", "replace").rstrip("\n"), problems)
        else:
            view.show_example(rec.example)
        if self.query_one(TabbedContent).active == "tab-mask":
            self._request_mask()

    def action_step(self, delta: int) -> None:
        if self.records:
            self.index = max(0, min(len(self.records) - 1, self.index + delta))
            self._show_current()

    def jump_to_line(self, line: int) -> bool:
        for i, rec in enumerate(self.records):
            if rec.line >= line:
                self.index = i
                self._show_current()
                self.query_one(TabbedContent).active = "tab-preview"
                return rec.line == line
        return False

    def action_goto_line(self) -> None:
        from tuneterm.tui.screens.modals import PromptModal

        def answered(value: str | None) -> None:
            if value and value.isdigit() and not self.jump_to_line(int(value)):
                self.notify(f"line {value} is not an example of {self.source}", severity="warning", timeout=4)

        self.app.push_screen(PromptModal("Go to line:", placeholder="line number"), answered)

    # --- problems ---------------------------------------------------------------------------------

    def action_validate(self) -> None:
        if self.source and self.path:
            for problems in self._each(ProblemsPanel):
                problems.validating()
            self._validate(self.source, self.path)
            self.query_one(TabbedContent).active = "tab-problems"

    @on(Validated)
    def _validated(self, event: Validated) -> None:
        if event.source != self.source:
            return
        self.report = event.report
        for problems in self._each(ProblemsPanel):
            problems.show_report(event.report)
        self.query_one(DatasetTable).set_status(event.source, event.report.status)
        self._show_current()

    @on(ProblemsPanel.ProblemChosen)
    def _problem_selected(self, event: ProblemsPanel.ProblemChosen) -> None:
        p = event.problem
        if p.hint:
            self.notify(p.hint, title=p.kind, timeout=6)
        if p.line is not None:
            self.jump_to_line(p.line)

    # --- lengths and mask ---------------------------------------------------------------------------

    @on(TabbedContent.TabActivated)
    def _tab(self) -> None:
        self._refresh_tab()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def _refresh_tab(self) -> None:
        active = self.query_one(TabbedContent).active
        panels = self._each(LengthsPanel)
        if active == "tab-lengths" and panels:
            panels[0].histogram()
        if active == "tab-lengths" and panels and self.path and not self.lengths and self.model:
            panels[0].measuring(self.model)
            self._measure(self.source, self.path, self.model)
        elif active == "tab-mask":
            self._request_mask()

    def _request_mask(self) -> None:
        panels = self._each(MaskPanel)
        if not self.records or not self.model or not panels:
            return
        rec = self.records[self.index]
        if not isinstance(rec.example, dict):
            panels[0].show_message("this row is not an example (see Preview)")
            return
        panels[0].tokenizing(self.model, rec.unit, rec.line)
        self._mask(self.source, rec.line, rec.example, self.model)

    @on(LengthsMeasured)
    def _lengths(self, event: LengthsMeasured) -> None:
        if event.source != self.source or event.model != self.model:
            return
        self.lengths = event.lengths
        for panel in self._each(LengthsPanel):
            panel.show(event.lengths, event.model, event.limit)

    @on(MaskReady)
    def _mask_ready(self, event: MaskReady) -> None:
        if event.source == self.source and event.model == self.model:
            for panel in self._each(MaskPanel):
                panel.show_tokens(event.model, event.line, event.tokens)

    def action_choose_model(self) -> None:
        from tuneterm.tui.screens.modals import PromptModal

        def answered(value: str | None) -> None:
            if value and value != self.model:
                self.model, self.lengths = value, []
                self.notify(f"lengths and mask now use {value}'s tokenizer", timeout=3)
                self._refresh_tab()

        self.app.push_screen(PromptModal("Model whose chat template and tokenizer to use:", self.model,
                                         "smollm2-135m-instruct, hf:ORG/NAME, ./folder, job:ID"), answered)

    # --- import, split, remove --------------------------------------------------------------------

    def action_import_dataset(self) -> None:
        from tuneterm.tui.screens.import_modal import ImportModal

        def answered(request) -> None:
            if request is None:
                return
            if request.validate_only:
                self._open(request.path)
                self.query_one(TabbedContent).active = "tab-problems"
            else:
                self.notify(f"importing {request.path}…", timeout=3)
                self._change("import", path=request.path, name=request.name, skip_invalid=request.skip_invalid)

        self.app.push_screen(ImportModal(), answered)

    def action_split(self) -> None:
        if self.source in self.names:
            self.notify(f"splitting {self.source} 80/10/10 (seed 0)…", timeout=3)
            self._change("split", name=self.source)
        else:
            self.notify("select a workspace dataset to split", severity="warning", timeout=3)

    def action_remove(self) -> None:
        if self.source not in self.names:
            return
        from tuneterm.tui.screens.modals import ConfirmModal

        name = self.source

        def answered(yes: bool | None) -> None:
            if yes:
                self._change("remove", name=name)

        self.app.push_screen(ConfirmModal(f"Remove dataset {name}? (the source file stays)"), answered)

    def action_reload(self) -> None:
        self._list()
        if self.source:
            self._open(self.source)

    @on(Changed)
    def _changed(self, event: Changed) -> None:
        self.notify(event.text, timeout=4)
        if event.select:
            self.source = None if event.select != self.source else self.source
            self._open(event.select)
        elif self.source not in self.names:
            self.source = None
        self._list()
