"""CostScreen: what a hosted fine-tune of a dataset costs, per provider, across models, and when it pays off.

Every change of dataset, model or epochs re-runs the estimate in an exclusive worker (latest
wins; a stale answer is dropped) through tuneterm.core.cost, the same code as `tuneterm cost`.
Prices are data with a date: the screen says "≈" and the table's as-of date.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Select, Static
from textual.worker import get_current_worker

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.suggesters import DatasetSuggester

PROVIDERS = ("openai", "azure", "together", "fireworks", "mistral")
DEBOUNCE_S = 0.3


def _usd(value) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 0.1 else f"${value:,.4f}"


class CostScreen(WorkbenchScreen):
    MODE = "cost"
    CONTENT = "#cost-body"
    BINDINGS = [
        Binding("ctrl+r", "estimate", "Re-estimate", id="cost.estimate"),
        Binding("ctrl+g", "focus_field('cost-dataset')", "Dataset", id="cost.dataset"),
        Binding("ctrl+o", "focus_field('cost-model')", "Model", id="cost.model"),
    ]

    @dataclass
    class ChoicesLoaded(Message):
        datasets: list[str]
        models: list[str]
        as_of: str
        provider: str = "openai"

    @dataclass
    class EstimateReady(Message):
        serial: int
        result: dict

    @dataclass
    class SavingsReady(Message):
        serial: int
        result: dict

    def __init__(self) -> None:
        super().__init__()
        self.serial = 0
        self.estimate: dict | None = None
        self.savings: dict | None = None
        self._timer = None

    def compose_body(self):
        with VerticalScroll(id="cost-body"):
            with Horizontal(id="cost-form", classes="form-row"):
                dataset = Input(placeholder="tickets or ./file.jsonl", id="cost-dataset",
                                suggester=DatasetSuggester((".jsonl",)))
                dataset.border_title = "dataset"
                yield dataset
                provider = Select([(p, p) for p in PROVIDERS], value="openai", id="cost-provider", allow_blank=False)
                provider.border_title = "provider"
                yield provider
                model = Select([], prompt="model", id="cost-model", allow_blank=True)
                model.border_title = "model"
                yield model
                epochs = Input("auto", id="cost-epochs", placeholder="auto or 1-50")
                epochs.border_title = "epochs"
                yield epochs
            yield Static("pick a dataset and a model", id="cost-summary")
            yield DataTable(id="cost-compare", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="savings-form", classes="form-row"):
                requests = Input("10000", id="cost-requests", type="integer")
                requests.border_title = "requests"
                yield requests
                shots = Input("3", id="cost-shots", type="integer")
                shots.border_title = "few-shot K"
                yield shots
                yield Static("", id="cost-savings")

    def on_mount(self) -> None:
        table = self.query_one("#cost-compare", DataTable)
        for label in ("model", "enc", "epochs", "billed tokens", "≈ cost", "note"):
            table.add_column(label, key=label)
        self.after_first_paint(self._load_choices)

    # --- workers --------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="cost-choices", exit_on_error=False)
    def _load_choices(self, provider: str = "openai") -> None:
        from tuneterm.core.prices import load_prices
        from tuneterm.tui.dataset_paths import dataset_names

        table = load_prices(None, provider)
        models = [row.id for row in table.fine_tunable("supervised")]
        self.post_message(self.ChoicesLoaded(dataset_names(), models, table.as_of, provider))

    @work(thread=True, exclusive=True, group="cost-estimate", exit_on_error=False)
    def _estimate(self, serial: int, dataset: str, model: str, epochs: str, provider: str = "openai") -> None:
        from tuneterm.core import cost
        from tuneterm.tui.dataset_paths import resolve

        path = resolve(dataset, "train")
        result = cost.estimate(path, model, epochs or "auto", compare=True, provider=provider)
        if not get_current_worker().is_cancelled:
            self.post_message(self.EstimateReady(serial, result))

    @work(thread=True, exclusive=True, group="cost-savings", exit_on_error=False)
    def _savings(self, serial: int, dataset: str, model: str, epochs: str, requests: int, shots: int,
                 provider: str = "openai") -> None:
        from tuneterm.core import cost
        from tuneterm.core.errors import ConfigError
        from tuneterm.tui.dataset_paths import resolve

        path = resolve(dataset, "train")
        try:
            result = cost.savings(path, model, requests, shots, epochs or "auto", provider=provider)
        except ConfigError as exc:  # no inference prices for this provider's model: say so in place
            result = {"error": f"{exc.title} ({provider})"}
        if not get_current_worker().is_cancelled:
            self.post_message(self.SavingsReady(serial, result))

    # --- events ---------------------------------------------------------------------------------

    @on(ChoicesLoaded)
    def _choices(self, event: ChoicesLoaded) -> None:
        if event.provider != self._provider():
            return
        self.query_one("#cost-dataset", Input).suggester.names = event.datasets
        select = self.query_one("#cost-model", Select)
        select.set_options([(m, m) for m in event.models])
        if event.models:
            preferred = next((m for m in event.models if m.startswith("gpt-4o-mini")), event.models[0])
            select.value = preferred
        dataset = self.query_one("#cost-dataset", Input)
        if not dataset.value and event.datasets:
            dataset.value = "tickets" if "tickets" in event.datasets else event.datasets[0]
        self._schedule()

    @on(Select.Changed, "#cost-provider")
    def _provider_changed(self) -> None:
        self._load_choices(self._provider())

    @on(Input.Changed)
    @on(Select.Changed, "#cost-model")
    def _changed(self) -> None:
        self._schedule()

    def _provider(self) -> str:
        value = self.query_one("#cost-provider", Select).value
        return value if isinstance(value, str) else "openai"

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self.action_estimate)

    def _form(self) -> tuple[str, str, str] | None:
        dataset = self.query_one("#cost-dataset", Input).value.strip()
        model = self.query_one("#cost-model", Select).value
        epochs = self.query_one("#cost-epochs", Input).value.strip() or "auto"
        if not dataset or model is Select.NULL or not isinstance(model, str):
            return None
        return dataset, model, epochs

    def action_estimate(self) -> None:
        form = self._form()
        if form is None:
            return
        self.serial += 1
        self.query_one("#cost-summary", Static).update(f"estimating {form[1]} on {form[0]}…")
        self.query_one("#cost-summary").add_class("-busy")
        provider = self._provider()
        self._estimate(self.serial, *form, provider)
        requests = self.query_one("#cost-requests", Input).value or "0"
        shots = self.query_one("#cost-shots", Input).value or "0"
        self._savings(self.serial, *form, int(requests), int(shots), provider)

    def action_focus_field(self, widget_id: str) -> None:
        self.query_one(f"#{widget_id}").focus()

    @on(EstimateReady)
    def _show_estimate(self, event: EstimateReady) -> None:
        if event.serial != self.serial:
            return
        r = self.estimate = event.result
        summary = self.query_one("#cost-summary", Static)
        summary.remove_class("-busy")
        lo_hi = r.get("estimated_cost_range_usd") or [None, None]
        band = "" if r.get("tokens_exact", True) else f" (estimate ±{r['token_band']:.0%})"
        if r["estimated_cost_usd"] is None:
            price = "[b]price unknown[/b]" + (f" (fees ≥ {_usd(r['minimum_total_usd'])})" if r.get("minimum_total_usd") else "")
        else:
            price = f"[b]≈ {_usd(r['estimated_cost_usd'])}[/b] ({_usd(lo_hi[0])}–{_usd(lo_hi[1])})"
            price += " [yellow]unverified price[/yellow]" if r.get("price_status") == "unverified" else ""
        lines = [
            f"[b]{r['model']}[/b] · {r['n_examples']} examples · {r['n_epochs']} epochs ({r['epochs_source']}) · "
            f"{r['billable_tokens_per_epoch']:,} tokens/epoch{band}",
            f"{price} for {(r['billed_tokens'] or 0):,} billed tokens · prices as of {r['prices_as_of']}",
        ]
        lines += [f"[yellow]! {w}[/yellow]" for w in r.get("warnings", [])[:3]]
        summary.update("\n".join(lines))
        summary.set_class(bool(r.get("new_jobs_blocked")), "-blocked")
        table = self.query_one("#cost-compare", DataTable)
        table.clear()
        rows = sorted(r.get("compare") or [r], key=lambda c: (c["estimated_cost_usd"] is None, c["estimated_cost_usd"] or 0))
        for c in rows:
            note = "shut down" if c.get("shut_down") else (c["notes"][0][:30] if c.get("notes") else "")
            if c.get("n_over_limit"):
                note = f"{c['n_over_limit']} over limit"
            table.add_row(c["model"], c["encoding"].split("_")[0], str(c["n_epochs"]),
                          f"{(c['billed_tokens'] or 0):,}", _usd(c["estimated_cost_usd"]), note, key=c["model"])

    @on(SavingsReady)
    def _show_savings(self, event: SavingsReady) -> None:
        if event.serial != self.serial:
            return
        s = self.savings = event.result
        if "error" in s:
            self.query_one("#cost-savings", Static).update(s["error"])
            return
        even = s["break_even_requests"]
        text = (f"{s['few_shot']}-shot base {_usd(s['base_cost_per_request_usd'] * 1000)}/1k req vs tuned "
                f"{_usd(s['finetuned_cost_per_request_usd'] * 1000)}/1k · "
                + (f"break-even ≈ {even:,} requests" if even else "never breaks even")
                + f" · net over {s['requests']:,}: {_usd(s['net_savings_usd'])}")
        self.query_one("#cost-savings", Static).update(text)
