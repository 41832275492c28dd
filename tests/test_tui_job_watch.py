"""One job watcher for the workbench: a job's state change reaches every screen that shows it,
through the app's single watcher thread, at the poll interval the settings give."""

from __future__ import annotations

from tuneterm.core import jobs
from tuneterm.core.jobs.store import update_status
from tui_recording import RecordingApp, until
from tuneterm.tui.widgets.job_table import JobTable
from tuneterm.tui.widgets.keyed_table import KeyedTable


def _cell(table, key: str, column: str) -> str:
    return str(table.get_cell(key, column)) if key in table.keys else ""


async def test_a_state_change_reaches_jobs_quantize_and_evals_through_one_watcher():
    train = jobs.create_job("train", {"model": "x"}, name="lora tickets")
    quant = jobs.create_job("quantize", {"method": "int8-dynamic", "model": "job:abc"})
    run = jobs.create_job("eval", {"spec": "evals/tickets"}, name="eval tickets")
    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(JobTable)
        assert await until(pilot, lambda: set(table.job_ids) == {train.id, quant.id, run.id})
        assert _cell(table, train.id, "state") == "queued"
        update_status(train.dir, state="succeeded")
        assert await until(pilot, lambda: _cell(table, train.id, "state") == "succeeded")

        await pilot.press("f5")
        await pilot.pause()
        qz = app.screen
        assert type(qz).__name__ == "QuantizeScreen"
        qz_table = qz.query_one("#qz-jobs", KeyedTable)
        assert await until(pilot, lambda: qz_table.keys == [quant.id])  # only quantize jobs
        assert _cell(qz_table, quant.id, "method") == "int8-dynamic"
        update_status(quant.dir, state="failed", error="out of memory")
        assert await until(pilot, lambda: _cell(qz_table, quant.id, "state") == "failed")
        assert await until(pilot, lambda: "before the gate ran. out of memory" in str(qz.query_one("#qz-report").render()))

        await pilot.press("f6")
        await pilot.pause()
        ev = app.screen
        assert type(ev).__name__ == "EvalsScreen"
        runs = ev.query_one("#evals-runs", KeyedTable)
        assert await until(pilot, lambda: runs.keys == [run.id])
        update_status(run.dir, state="cancelled")
        assert await until(pilot, lambda: _cell(runs, run.id, "state") == "cancelled")
        assert await until(pilot, lambda: "cancelled" in str(ev.query_one("#evals-status").render()))

        # Back on Jobs, the change made while it was hidden is drawn.
        update_status(quant.dir, state="cancelled", error=None)
        await pilot.press("f4")
        assert await until(pilot, lambda: _cell(table, quant.id, "state") == "cancelled")

        # One thread reads the job folders for all of them; no screen polls on its own.
        groups = [w.group for w in app.workers]
        assert groups.count("jobs-watch") == 1
        assert not [g for g in groups if "poll" in g]


async def test_evals_reads_at_the_settings_interval(monkeypatch):
    from tuneterm.core.settings import get_settings

    monkeypatch.setenv("TUNETERM_JOB_POLL_SECONDS", "3600")
    get_settings(fresh=True)
    run = jobs.create_job("eval", {"spec": "evals/tickets"}, name="eval tickets")
    app = RecordingApp(start="evals")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        status = screen.query_one("#evals-status")
        assert await until(pilot, lambda: f"{run.id} · queued" in str(status.render()))
        update_status(run.dir, state="cancelled")
        for _ in range(30):  # 1.5 s: a screen that ignores the setting (0.5 s) reads it again
            await pilot.pause(0.05)
        assert "queued" in str(status.render())
        screen.set_focus(None)
        await pilot.press("ctrl+r")  # refresh: read now
        assert await until(pilot, lambda: f"{run.id} · cancelled" in str(status.render()))


async def test_keyed_table_updates_in_place_and_keeps_the_cursor():
    from textual.app import App

    class One(App):
        def compose(self):
            yield KeyedTable((("id", "job"), ("state", "state")))

    app = One()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        table.sync({"a": ("a", "queued"), "b": ("b", "running")})
        table.move_cursor(row=1)
        table.sync({"a": ("a", "queued"), "b": ("b", "succeeded")})
        assert table.selected_key == "b" and str(table.get_cell("b", "state")) == "succeeded"
        table.sync({"c": ("c", "queued"), "a": ("a", "queued"), "b": ("b", "succeeded")})  # a new row on top
        assert table.keys == ["c", "a", "b"] and table.selected_key == "b"
        table.sync({"c": ("c", "queued")})
        assert table.keys == ["c"] and table.selected_key == "c"
        assert [str(c.label) for c in table.columns.values()] == ["job", "state"]
        await pilot.pause()


async def test_a_running_job_shows_its_eta_on_jobs_and_train():
    import json
    import time

    job = jobs.create_job("train", {"model": "x"}, name="lora tickets")
    update_status(job.dir, state="running")  # no pid file: the store leaves the state as it is
    now = time.time()
    with open(job.dir / "events.jsonl", "w") as fh:
        for step in (1, 2, 3):
            fh.write(json.dumps({"type": "train", "step": step, "total_steps": 10, "loss": 1.0 / step,
                                 "eta_s": 3600.0 - step, "time": now}) + "\n")
    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(JobTable)
        assert await until(pilot, lambda: "3/10 · ETA " in _cell(table, job.id, "progress"))
        assert _cell(table, job.id, "progress").endswith(("59m57s", "59m56s", "59m55s", "59m54s"))
        summary = app.screen.query_one("#job-summary")
        assert await until(pilot, lambda: "step 3/10" in str(summary.render()) and "ETA 59m5" in str(summary.render()))

        await pilot.press("3")
        assert await until(pilot, lambda: app.current_mode == "train")
        from tuneterm.tui.widgets.job_progress_line import JobProgressLine

        line = app.screen.query_one(JobProgressLine)
        line.job_id = job.id  # as a launch from this screen does
        app.screen.follow_jobs(job.id)
        assert await until(pilot, lambda: line.text.startswith(f"job {job.id} · running · step 3/10")
                            and "ETA 59m5" in line.text)
        update_status(job.dir, state="succeeded")
        assert await until(pilot, lambda: f"job {job.id} · succeeded" in line.text and "ETA" not in line.text)
