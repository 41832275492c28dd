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
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.lazy import Lazy
from textual.message import Message
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from tuneterm.tui import backends
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.widgets.mask_view import MaskView
from tuneterm.tui.widgets.turn_view import ChatTurnView

STORE = "tuneterm.core.datasets.store"
DEFAULT_CUTOFF = 512
STATUS_MARK = {"clean": "✓", "warnings": "!", "errors": "✗"}  # "·": not validated yet


class DatasetsScreen(WorkbenchScreen):
    MODE = "datasets"
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
    class BackendMissing(Message):
        missing: backends.Missing

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
        self.cutoff = DEFAULT_CUTOFF
        self.names: list[str] = []
        self.statuses: dict[str, str] = {}  # name -> validation status, once validated

    def compose_body(self):
        with Horizontal(id="ds-body"):
            with Vertical(id="ds-left"):
                yield Static("", id="ds-missing", classes="missing hidden")
                yield DataTable(id="ds-table", cursor_type="row", zebra_stripes=True)
                yield Static("i: import a file", id="ds-hint", classes="hint")
            with TabbedContent(id="ds-tabs", initial="tab-preview"):
                with TabPane("Preview", id="tab-preview"):
                    yield Static("no dataset selected", id="preview-head", classes="pane-title")
                    yield ChatTurnView(id="preview")
                with TabPane("Problems", id="tab-problems"):
                    yield Static("not validated yet (v)", id="problems-head")
                    yield Lazy(DataTable(id="problems", cursor_type="row", zebra_stripes=True))
                with TabPane("Lengths", id="tab-lengths"):
                    with Horizontal(classes="form-row"):
                        cutoff = Input(str(DEFAULT_CUTOFF), id="cutoff", type="integer")
                        cutoff.border_title = "cutoff (tokens)"
                        yield cutoff
                        yield Static("", id="lengths-head")
                    # The plot (plotext) is imported and mounted when the tab is first opened.
                    yield Vertical(id="histogram-slot")
                with TabPane("Mask", id="tab-mask"):
                    yield Static("", id="mask-head")
                    with VerticalScroll(id="mask-scroll"):
                        yield MaskView(id="mask")

    def on_mount(self) -> None:
        table = self.query_one("#ds-table", DataTable)
        for label, key in (("name", "name"), ("rows", "rows"), ("splits", "splits"), ("ok", "status")):
            table.add_column(label, key=key)
        table.focus()
        self.call_after_refresh(self._after_first_paint)

    def _after_first_paint(self) -> None:
        self._load_model()
        self._list()

    def _problems_table(self) -> DataTable:
        table = self.query_one("#problems", DataTable)
        if not table.columns:
            for label in ("line", "sev", "kind", "message"):
                table.add_column(label, key=label)
        return table

    def _histogram(self):
        from tuneterm.tui.widgets.token_histogram import TokenHistogram  # plotext, on first use

        found = self.query(TokenHistogram)
        if found:
            return found.first()
        hist = TokenHistogram(id="histogram")
        self.query_one("#histogram-slot", Vertical).mount(hist)
        return hist

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
        store = backends.load(STORE, "Use a file path with `v` (validate) meanwhile.")
        if isinstance(store, backends.Missing):
            self.post_message(self.BackendMissing(store))
            return
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
        store = backends.load(STORE)
        if isinstance(store, backends.Missing):
            self.post_message(self.BackendMissing(store))
            return
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

    @on(BackendMissing)
    def _missing(self, event: BackendMissing) -> None:
        note = self.query_one("#ds-missing", Static)
        note.update(event.missing.describe())
        note.remove_class("hidden")

    @on(Listed)
    def _show_list(self, event: Listed) -> None:
        table = self.query_one("#ds-table", DataTable)
        keep = self.source
        table.clear()
        self.names = [r.name for r in event.records]
        for r in event.records:
            splits = "/".join(str(v) for v in r.splits.values()) if r.splits else "-"
            status = STATUS_MARK.get(self.statuses.get(r.name, ""), "·")
            table.add_row(r.name, str(r.n_examples), splits, status, key=r.name)
        hint = self.query_one("#ds-hint", Static)
        hint.update("ok: ✓ clean, ! warnings, ✗ errors, · not validated · i: import" if self.names else
                    "no datasets yet: i imports a file (make run imports the samples)")
        if keep in self.names:
            table.move_cursor(row=self.names.index(keep))
        elif self.names and keep is None:
            self._open(self.names[0])

    @on(DataTable.RowHighlighted, "#ds-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.source:
            self._open(str(event.row_key.value))

    def _open(self, source: str) -> None:
        self.source, self.path, self.records, self.index, self.report, self.lengths = source, None, [], 0, None, []
        self.query_one("#preview-head", Static).update(f"{source}: reading…")
        self.query_one("#problems-head", Static).update("validating…")
        if self.query("#problems"):
            self._problems_table().clear()
        if self.query("#histogram"):
            self._histogram().set_lengths([], self.cutoff)
        self.query_one("#lengths-head", Static).update("")
        self.query_one(MaskView).show_message("")
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
            self.query_one("#problems-head", Static).update("validating…")
            self._validate(self.source, self.path)
            self.query_one(TabbedContent).active = "tab-problems"

    @on(Validated)
    def _validated(self, event: Validated) -> None:
        if event.source != self.source:
            return
        r = self.report = event.report
        head = self.query_one("#problems-head", Static)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "no problems"
        head.update(f"[b]{r.status}[/b] · {r.n_valid}/{r.n_examples} valid · {r.n_errors} errors, "
                    f"{r.n_warnings} warnings · {counts}" + (" (first ones kept)" if r.truncated else ""))
        head.set_classes(f"status-{r.status}")
        if event.source in self.names:
            self.statuses[event.source] = r.status
            self.query_one("#ds-table", DataTable).update_cell(event.source, "status", STATUS_MARK[r.status])
        table = self._problems_table()
        table.clear()
        for i, p in enumerate(r.problems):
            table.add_row("-" if p.line is None else str(p.line), p.severity[:4], p.kind, p.message, key=str(i))
        self._show_current()

    @on(DataTable.RowSelected, "#problems")
    def _problem_selected(self, event: DataTable.RowSelected) -> None:
        if self.report is None or event.row_key is None:
            return
        p = self.report.problems[int(event.row_key.value)]
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
        if active == "tab-lengths":
            self._histogram()
        if active == "tab-lengths" and self.path and not self.lengths and self.model:
            self.query_one("#lengths-head", Static).update(f"measuring with {self.model}'s tokenizer…")
            self._measure(self.source, self.path, self.model)
        elif active == "tab-mask":
            self._request_mask()

    def _request_mask(self) -> None:
        if not self.records or not self.model:
            return
        rec = self.records[self.index]
        if not isinstance(rec.example, dict):
            self.query_one(MaskView).show_message("this row is not an example (see Preview)")
            return
        self.query_one("#mask-head", Static).update(f"{self.model}: tokenizing {rec.unit} {rec.line}…")
        self._mask(self.source, rec.line, rec.example, self.model)

    @on(LengthsMeasured)
    def _lengths(self, event: LengthsMeasured) -> None:
        if event.source != self.source or event.model != self.model:
            return
        self.lengths = event.lengths
        self._draw_lengths(event.limit)

    def _draw_lengths(self, limit: int | None = None) -> None:
        values = [n for _, n in self.lengths]
        hist = self._histogram()
        hist.set_lengths(values, self.cutoff)
        if values:
            longest = max(self.lengths, key=lambda ln: ln[1])
            text = (f"{len(values)} examples · {self.model} · mean {sum(values) / len(values):.0f}, "
                    f"max {longest[1]} (line {longest[0]}) · [b]{hist.n_over} over {self.cutoff}[/b]"
                    + (" (truncated in training)" if hist.n_over else ""))
            if limit:
                text += f" · model limit {limit}"
            self.query_one("#lengths-head", Static).update(text)

    @on(Input.Changed, "#cutoff")
    def _cutoff(self, event: Input.Changed) -> None:
        if event.value.isdigit() and int(event.value) > 0:
            self.cutoff = int(event.value)
            if self.lengths:
                self._draw_lengths()

    @on(MaskReady)
    def _mask_ready(self, event: MaskReady) -> None:
        if event.source != self.source or event.model != self.model:
            return
        view = self.query_one(MaskView)
        view.show_tokens(event.tokens)
        self.query_one("#mask-head", Static).update(
            f"{self.model} · line {event.line} · {len(view.tokens)} tokens, "
            f"[reverse green]{view.n_trained} trained[/] · [dim]{len(view.tokens) - view.n_trained} masked[/]")

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
