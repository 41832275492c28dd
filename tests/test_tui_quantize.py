"""The Quantize screen: the method's recipe as a form, checks before launch, a real quantize job
on the tiny model launched detached and followed to its quality report, and the report view."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tui_recording import RecordingApp, until as _until

from tuneterm.core import jobs
from tuneterm.tui.widgets.model_input import ModelInput
from tuneterm.tui.widgets.quant_report import QuantReport, phase_line, report_text
from tuneterm.tui.widgets.recipe_panel import RecipePanel


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _text(screen, selector) -> str:
    return str(screen.query_one(selector).render())


def _form_ready(screen, key: str) -> bool:
    form = screen.query_one(RecipePanel).form
    return form is not None and key in form.flat


def test_the_screen_offers_every_method_with_a_recipe():
    from tuneterm.tui.screens.quantize import METHODS
    from tuneterm.core.quantize_config import METHODS as KNOWN  # torch-free

    assert sorted(METHODS) == sorted(KNOWN)
    assert all((RECIPES / f"{method}.toml").is_file() for method in METHODS)


async def test_method_recipe_form_help_and_a_typo_fails_before_any_job():
    app = RecordingApp(start="quantize")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: _form_ready(screen, "quant.smooth_alpha"))
        form = screen.query_one(RecipePanel).form
        recipe = tomllib.loads((RECIPES / "int8-dynamic.toml").read_text())  # others tune the values
        assert form.flat["gate.max_ppl_increase"] == recipe["gate"]["max_ppl_increase"]
        assert form.flat["quant.smooth_alpha"] == recipe["quant"]["smooth_alpha"]
        assert "SmoothQuant" in form.comments["quant.smooth_alpha"]  # the recipe's own comment
        assert await _until(pilot, lambda: screen.query_one("#qz-model").value == "smollm2-135m-instruct")
        # Focusing a setting shows its whole comment.
        screen.query_one("#f-gate--max_texts").focus()
        await pilot.pause()
        assert _text(screen, "#qz-recipe .recipe-head") == f"gate.max_texts: {form.comments['gate.max_texts']}"
        assert "perplexity" in form.comments["gate.max_texts"]
        # Another method, another recipe: gguf has an outtype choice.
        screen.query_one("#qz-method").value = "gguf"
        assert await _until(pilot, lambda: _form_ready(screen, "quant.outtype"))
        assert await _until(pilot, lambda: screen.query_one("#f-quant--outtype").value == "q8_0")
        assert "recipes/gguf.toml" in _text(screen, "#qz-recipe .recipe-head")
        # A bad value fails here, with the command's own message, and writes no job.
        screen.query_one("#f-quant--outtype").value = "f16"
        screen.query_one("#f-gate--max_texts").value = "0"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: any(n.severity == "error" for n in app.notes))
        note = next(n for n in app.notes if n.severity == "error")
        assert note.title == "gate.max_texts must be at least 1"
        # A job:ID without an artifact fails the same way.
        screen.query_one("#f-gate--max_texts").value = "16"
        screen.query_one("#qz-model").value = "job:20990101-000000-none"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: sum(n.severity == "error" for n in app.notes) == 2)
        assert jobs.list_jobs() == []
        # The footer and the palette carry the screen's actions.
        from tuneterm.tui.palette import WorkbenchCommands

        names = [name for name, _run, _help in WorkbenchCommands(screen)._commands()]
        assert {"Quantize: Launch", "Quantize: Reports", "Quantize: Reset recipe"} <= set(names)


async def test_launch_a_real_job_follow_it_and_read_its_report(tiny_model_dir):
    app = RecordingApp(start="quantize")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: _form_ready(screen, "quant.smooth_alpha"))
        screen.query_one("#qz-model").value = str(tiny_model_dir)
        screen.query_one("#f-gate--max_texts").value = "2"
        screen.query_one("#f-gate--max_length").value = "32"
        screen.query_one("#f-gate--max_new_tokens").value = "4"
        screen.query_one("#qz-extra").value = 'gate.prompts=["Hi"] gate.min_exact_match=0.0'
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: screen.launched, tries=600), app.notes
        job = jobs.get_job(screen.launched[0])
        spec = tomllib.loads((job.dir / "spec.toml").read_text())
        assert spec["job"]["kind"] == "quantize"
        config = spec["config"]
        assert config["model"] == str(tiny_model_dir) and config["method"] == "int8-dynamic"
        recipe = tomllib.loads((RECIPES / "int8-dynamic.toml").read_text())
        assert config["quant"]["smooth_alpha"] == recipe["quant"]["smooth_alpha"]  # from the recipe file
        assert config["gate"]["max_texts"] == 2 and config["gate"]["max_length"] == 32
        assert config["gate"]["max_new_tokens"] == 4 and config["gate"]["prompts"] == ["Hi"]
        assert config["gate"]["min_exact_match"] == 0.0
        assert (job.dir / "pid").is_file()  # started detached
        assert any("started" in n.message and "tuneterm quantize" in n.message for n in app.notes)

        # Follow it on the Reports tab until the gate's report is drawn.
        await pilot.press("ctrl+o")
        assert await _until(pilot, lambda: screen.selected == job.id)
        view = screen.query_one(QuantReport)
        assert await _until(pilot, lambda: view.report is not None, tries=2400, step=0.1), \
            (jobs.get_job(job.id).state, jobs.tail_log(job.id, 20))
        report = json.loads((job.dir / "output" / "quality.json").read_text())
        assert view.text.startswith("Gate: PASSED")
        for label in ("size on disk (MB)", "load time (s)", "time to 1st token (ms)", "decode (tok/s)",
                      "perplexity", "mean KL", "top-1 agreement", "exact match"):
            assert label in view.text
        assert f"{report['quantized']['ppl']:.4f}" in view.text
        assert f"{report['parent']['size_mb']:,.2f}" in view.text
        assert f"{100 * report['top1_agreement']:.1f}%" in view.text
        assert await _until(pilot, lambda: screen.jobs[job.id].state == "succeeded", tries=600)
        assert await _until(pilot, lambda: f"use it as job:{job.id}" in _text(screen, "#qz-status"))
        assert "gate passed" in _text(screen, "#qz-progress")
        table = screen.query_one("#qz-jobs")
        assert str(table.get_cell(job.id, "gate")) == "passed"
        # The finished job is now a model reference the model field completes.
        await pilot.press("ctrl+b")
        model = screen.query_one(ModelInput)
        model.reload()
        assert await _until(pilot, lambda: f"job:{job.id}" in model.refs)
    assert jobs.get_job(job.id).state == "succeeded"

    # The same real report, as a failed gate shows it.
    failed = dict(report, passed=False, failures=["ppl_increase = 0.31 is above gate.max_ppl_increase = 0.05"])
    text = report_text(failed, "")
    assert text.splitlines()[0] == "Gate: FAILED"
    assert "✗ ppl_increase = 0.31 is above gate.max_ppl_increase = 0.05" in text
    # and its progress line from the job's real events
    events, _ = jobs.read_events(job.id)
    assert phase_line(events, "succeeded") == "gate: passed"
    first = next(i for i, e in enumerate(events) if e.get("phase") == "load_parent")
    assert phase_line(events[:first], "running") == "running: waiting for the first event"
    assert phase_line(events[:first + 1], "running").startswith("step 1/6 · loading the parent")


async def test_damaged_and_vanishing_jobs_do_not_stop_the_reports():
    import shutil

    config = {"model": "smollm2-135m-instruct", "method": "gguf", "quant": {}, "gate": {}}
    damaged = jobs.create_job("quantize", config)
    (damaged.dir / "output").mkdir(exist_ok=True)
    (damaged.dir / "output" / "quality.json").write_text("{not json")
    doomed = jobs.create_job("quantize", config)
    app = RecordingApp(start="quantize")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        assert await _until(pilot, lambda: set(screen.jobs) == {damaged.id, doomed.id})
        table = screen.query_one("#qz-jobs")
        assert str(table.get_cell(damaged.id, "gate")) == "-"  # an unreadable report is no verdict
        assert str(table.get_cell(damaged.id, "method")) == "gguf"
        shutil.rmtree(doomed.dir)
        assert await _until(pilot, lambda: set(screen.jobs) == {damaged.id})
        table.move_cursor(row=0)
        assert await _until(pilot, lambda: screen.selected == damaged.id
                            and "queued" in _text(screen, "#qz-status"))
        assert app.is_running
