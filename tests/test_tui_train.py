"""The Train screen: the recipe as a form with its comments, a memory estimate, checks before
launch, and a launch that writes a real job folder and starts it detached."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tuneterm.core import jobs
from tuneterm.core.datasets import store
from tui_recording import RecordingApp, until as _until
from tuneterm.tui.widgets.recipe_form import RecipeForm

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def _text(screen, selector) -> str:
    return str(screen.query_one(selector).render())


async def test_recipe_form_help_and_memory_estimate(embedded_model_dir):
    app = RecordingApp(start="train")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.query(RecipeForm))
        form = screen.query_one(RecipeForm)
        assert form.flat["lora.r"] == 16
        assert "adapter rank" in form.comments["lora.r"]
        assert await _until(pilot, lambda: "GiB (estimate)" in _text(screen, "#train-memory"))
        lora_text = _text(screen, "#train-memory")
        assert "134.5 M params" in lora_text
        # Focusing a setting shows its whole comment.
        screen.query_one("#f-lora--r").focus()
        assert await _until(pilot, lambda: _text(screen, "#train-recipe .recipe-head").startswith("lora.r: adapter rank"))
        # Another method: another recipe, another estimate.
        screen.query_one("#train-method").value = "full"
        assert await _until(pilot, lambda: screen.query(RecipeForm) and "lora.r" not in screen.query_one(RecipeForm).flat)
        assert await _until(pilot, lambda: "for full" in _text(screen, "#train-memory"))
        assert "134.5 M params, 134.52 M trained (100.00%)" in _text(screen, "#train-memory")


async def test_a_typo_fails_before_any_job_is_written():
    store.import_dataset(SAMPLES / "tickets", name="tickets")
    app = RecordingApp(start="train")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.query(RecipeForm) and screen.query_one("#train-data").value)
        screen.query_one("#f-train--lr").value = "fast"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: any(n.severity == "error" for n in app.notes))
        note = next(n for n in app.notes if n.severity == "error")
        assert note.title == "train.lr must be a number"
        assert jobs.list_jobs() == []


async def test_launch_writes_the_job_and_starts_it(tmp_path):
    store.import_dataset(SAMPLES / "tickets", name="tickets")
    app = RecordingApp(start="train")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.query(RecipeForm) and screen.query_one("#train-data").value)
        # A model reference that parses but cannot load: the job starts, then fails on its own.
        missing_model = tmp_path / "no-model"
        missing_model.mkdir()
        screen.query_one("#train-model").value = str(missing_model)
        screen.query_one("#f-lora--r").value = "4"
        screen.query_one("#f-train--max_steps").value = "1"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: screen.launched)
        job = jobs.get_job(screen.launched[0])
        spec = tomllib.loads((job.dir / "spec.toml").read_text())
        config = spec["config"]
        assert spec["job"]["kind"] == "train"
        assert config["lora"]["r"] == 4 and config["train"]["max_steps"] == 1
        assert config["data"] == str(store.resolve_path("tickets", "train").resolve())
        assert config["eval_data"] == str(store.resolve_path("tickets", "val").resolve())
        assert (job.dir / "pid").is_file()  # started detached
        assert any("started" in n.message for n in app.notes)
        line = screen.query_one("#train-progress")  # the app's job watcher brings its state here
        assert await _until(pilot, lambda: f"job {job.id} · " in line.text and "started" not in line.text, tries=600)
        await pilot.press("f4")  # a focused input would take "4" as text
        await pilot.pause()
        assert await _until(pilot, lambda: job.id in getattr(app.screen, "jobs", {}))
    # The workbench is closed; the job is not: stop it ourselves (it would fail on the empty model folder).
    import json
    import os
    import signal

    pgid = json.loads((job.dir / "pid").read_text())["pgid"]
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert jobs.wait_for(job.id, timeout=10).state == "failed"
