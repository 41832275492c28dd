"""The Datasets screen: list, preview as chat turns, validation with jump-to-line, import,
token lengths and the trained-token mask (through the helper process), files changing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneterm.core.datasets import store
from tui_recording import RecordingApp, until
from tuneterm.tui.screens.datasets import DatasetsScreen
from tuneterm.tui.widgets.mask_view import MaskView
from tuneterm.tui.widgets.token_histogram import TokenHistogram

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


async def _until(pilot, predicate, tries=200, step=0.05):
    return await until(pilot, predicate, tries, step)


def _turns(screen) -> list[tuple[str, str]]:
    return [(str(w.border_title), str(w.render())) for w in screen.query(".turn")]


@pytest.fixture
def tickets():
    return store.import_dataset(SAMPLES / "tickets", name="tickets")


async def test_list_preview_and_validation(tickets):
    app = RecordingApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, DatasetsScreen)
        assert await _until(pilot, lambda: screen.report is not None)
        table = screen.query_one("#ds-table")
        assert table.row_count == 1
        assert screen.source == "tickets" and len(screen.records) == tickets.n_examples
        turns = _turns(screen)
        assert [role for role, _ in turns] == ["system", "user", "assistant"]
        assert turns[2][1] in ("payments-ops", "platform-eng", "identity-team", "logistics")
        await pilot.press("right_square_bracket", "right_square_bracket", "left_square_bracket")
        assert screen.index == 1
        assert "example 2/" in str(screen.query_one("#preview-head").render())
        assert screen.report.n_examples == tickets.n_examples
        head = str(screen.query_one("#problems-head").render())
        assert f"{screen.report.n_valid}/{tickets.n_examples} valid" in head


async def test_validate_a_broken_file_and_jump_to_a_line():
    broken = SAMPLES / "broken" / "broken.jsonl"
    app = RecordingApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await pilot.press("i")
        await pilot.pause()
        assert type(app.screen).__name__ == "ImportModal"
        app.screen.query_one("#import-path").value = str(broken)  # typing is tested below
        await pilot.press("ctrl+l")  # validate only
        assert await _until(pilot, lambda: screen.report is not None)
        assert screen.source == str(broken)
        assert screen.query_one("#ds-tabs").active == "tab-problems"
        assert screen.report.status == "errors"
        assert "status-errors" in screen.query_one("#problems-head").classes
        problems = screen.query_one("#problems")
        row = next(i for i, p in enumerate(screen.report.problems) if p.kind == "invalid_json")
        line = screen.report.problems[row].line
        problems.focus()
        problems.move_cursor(row=row)
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#ds-tabs").active == "tab-preview"
        assert screen.records[screen.index].line == line
        assert [role for role, _ in _turns(screen)] == ["raw line (not an example)"]
        assert any(n.title == "invalid_json" for n in app.notes)  # the rule's hint


async def test_import_through_the_dialog_with_path_completion():
    from tuneterm.tui.suggesters import complete_path

    target = SAMPLES / "tickets" / "train.jsonl"
    assert complete_path(str(SAMPLES / "tick")) == str(SAMPLES / "tickets") + "/"
    assert complete_path(str(SAMPLES / "tickets" / "tr"), (".jsonl",)) == str(target)
    app = RecordingApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await pilot.press("i")
        await pilot.pause()
        app.screen.query_one("#import-path").value = str(SAMPLES / "tickets" / "t")
        await pilot.press("r")  # typing asks the suggester
        await pilot.pause(0.3)
        await pilot.press("right")  # take the suggestion
        assert app.screen.query_one("#import-path").value == str(target)
        await pilot.press("enter")  # -> the name field
        await pilot.press(*"tk", "enter")
        assert await _until(pilot, lambda: screen.names == ["tk"])
        assert store.get("tk").n_examples > 0
        assert await _until(pilot, lambda: screen.source == "tk" and screen.records)
        assert any("imported tk" in n.message for n in app.notes)


@pytest.mark.slow  # the helper process loads the embedded model's tokenizer (transformers)
async def test_mask_and_lengths_come_from_the_helper_process(tickets):
    app = RecordingApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.records and screen.model)
        await pilot.press("t")
        view = screen.query_one(MaskView)
        assert await _until(pilot, lambda: view.tokens, tries=600, step=0.1)
        answer = screen.records[0].example["messages"][-1]["content"]
        trained = "".join(text for text, on in view.tokens if on)
        assert trained.startswith(answer) and trained.rstrip("\n").endswith("<|im_end|>")
        assert "<|im_start|>user" in "".join(text for text, on in view.tokens if not on)
        await pilot.press("l")
        hist = screen.query_one(TokenHistogram)
        assert await _until(pilot, lambda: hist.lengths, tries=600, step=0.1)
        assert len(hist.lengths) == tickets.n_examples
        cutoff = min(hist.lengths) + 1
        screen.query_one("#cutoff").value = str(cutoff)
        await pilot.pause()
        assert hist.cutoff == cutoff and hist.n_over == sum(1 for n in hist.lengths if n > cutoff)
        assert f"{hist.n_over} over {cutoff}" in str(screen.query_one("#lengths-head").render())


async def test_a_dataset_file_changing_or_vanishing_underneath(tickets):
    app = RecordingApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.report is not None)
        path = screen.path
        path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{broken\n')
        await pilot.press("ctrl+r")
        assert await _until(pilot, lambda: len(screen.records) == 2 and screen.report is not None)
        path.unlink()
        await pilot.press("ctrl+r")
        assert await _until(pilot, lambda: any(n.severity == "error" for n in app.notes))
        assert app.is_running
