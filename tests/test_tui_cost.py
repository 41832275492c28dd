"""The Cost screen: the estimate follows the dataset, model and epochs; comparison; break-even."""

from __future__ import annotations

from pathlib import Path

from tuneterm.core import cost
from tuneterm.core.datasets import store
from tui_recording import RecordingApp, until as _until

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


async def test_estimate_updates_with_epochs_and_model():
    store.import_dataset(SAMPLES / "tickets", name="tickets")
    train = store.resolve_path("tickets", "train")
    app = RecordingApp(start="cost")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.estimate is not None and screen.savings is not None)
        assert screen.query_one("#cost-dataset").value == "tickets"
        first = screen.estimate
        expected = cost.estimate(train, first["model"], "auto", compare=True)
        assert first["estimated_cost_usd"] == expected["estimated_cost_usd"]
        table = screen.query_one("#cost-compare")
        assert table.row_count == len(expected["compare"])
        summary = str(screen.query_one("#cost-summary").render())
        assert "≈ $" in summary and f"prices as of {expected['prices_as_of']}" in summary

        # Change epochs: the estimate follows (latest wins).
        epochs = screen.query_one("#cost-epochs")
        epochs.focus()
        epochs.value = ""
        await pilot.press("7")
        assert await _until(pilot, lambda: screen.estimate["n_epochs"] == 7)
        assert screen.estimate["billed_tokens"] == 7 * screen.estimate["billable_tokens_per_epoch"]

        # Another model.
        select = screen.query_one("#cost-model")
        other = next(m for m in (c["model"] for c in expected["compare"]) if m != first["model"]
                     and cost.load_prices().get(m).training is not None)
        select.value = other
        assert await _until(pilot, lambda: screen.estimate["model"] == other)
        savings = str(screen.query_one("#cost-savings").render())
        assert "break" in savings and screen.savings["model"] == other


async def test_a_bad_epochs_value_is_a_notification_not_a_crash():
    app = RecordingApp(start="cost")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        screen.query_one("#cost-dataset").value = str(SAMPLES / "tickets" / "train.jsonl")
        screen.query_one("#cost-epochs").value = "99"
        assert await _until(pilot, lambda: any(n.severity == "error" for n in app.notes))
        note = next(n for n in app.notes if n.severity == "error")
        assert "epochs" in note.title and "hint: OpenAI accepts n_epochs 1-50" in note.message
        assert app.is_running


async def test_the_provider_choice_reprices_with_that_providers_table():
    store.import_dataset(SAMPLES / "tickets", name="tickets")
    app = RecordingApp(start="cost")
    async with app.run_test(size=(120, 34)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.estimate is not None)
        screen.query_one("#cost-provider").value = "mistral"
        assert await _until(pilot, lambda: screen.estimate.get("provider") == "mistral")
        assert screen.estimate["model"] == "open-mistral-7b"
        summary = str(screen.query_one("#cost-summary").render())
        assert "price unknown" in summary and "≈ $" not in summary
        assert await _until(pilot, lambda: screen.savings is not None and "error" in screen.savings)
        screen.query_one("#cost-provider").value = "fireworks"
        assert await _until(pilot, lambda: screen.estimate.get("provider") == "fireworks")
        assert "unverified price" in str(screen.query_one("#cost-summary").render())
