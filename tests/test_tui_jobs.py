"""The Jobs screen against the real job store: live table, detail, damage, actions."""

from __future__ import annotations

import json
import shutil

from tuneterm.core import jobs
from tui_recording import RecordingApp
from tuneterm.tui.screens.jobs import JobsScreen
from tuneterm.tui.widgets.job_table import JobTable
from tuneterm.tui.widgets.loss_chart import LossChart
from tuneterm.tui.widgets.log_tail import LogTail


def _fake_progress(job, steps=4, total=10):
    events = job.dir / "events.jsonl"
    with open(events, "a") as fh:
        for step in range(1, steps + 1):
            fh.write(json.dumps({"step": step, "max_steps": total, "loss": 2.0 / step,
                                 "tokens_per_s": 120.0, "time": 100.0 + step}) + "\n")
        fh.write(json.dumps({"step": steps, "eval_loss": 1.5}) + "\n")
    (job.dir / "log.txt").write_text("loading model\nstep 4 loss 0.5\n")
    status = json.loads((job.dir / "status.json").read_text())
    status.update(state="succeeded", finished_at="2026-11-27T18:00:00+00:00")
    (job.dir / "status.json").write_text(json.dumps(status))


async def _until(pilot, predicate, tries=100):
    for _ in range(tries):
        await pilot.pause(0.05)
        if predicate():
            return True
    return False


async def test_jobs_table_detail_and_damage():
    first = jobs.create_job("train", {"model": "smollm2-135m-instruct", "dataset": "tickets"})
    _fake_progress(first)
    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        table = screen.query_one(JobTable)
        assert await _until(pilot, lambda: table.row_count == 1)
        assert await _until(pilot, lambda: len(screen.events.get(first.id, [])) == 5)
        chart = screen.query_one(LossChart)
        assert [round(y, 3) for _, y in chart.train] == [2.0, 1.0, 0.667, 0.5]
        assert chart.evals == [(4.0, 1.5)]
        summary = str(screen.query_one("#job-summary").render())
        assert "step 4/10" in summary and "120 tok/s" in summary
        assert "ETA" not in summary  # finished: no ETA
        assert await _until(pilot, lambda: "step 4 loss 0.5" in screen.query_one(LogTail).lines_shown)

        # A second job appears while we watch.
        second = jobs.create_job("train", {"model": "x"})
        assert await _until(pilot, lambda: set(table.job_ids) == {first.id, second.id})

        # A corrupt status.json and a vanished folder: no crash, the table follows.
        (second.dir / "status.json").write_text("{not json")
        shutil.rmtree(first.dir)
        assert await _until(pilot, lambda: table.job_ids == [second.id])
        assert app.is_running

        # The artifact dialog for a job without an artifact says so.
        await pilot.press("o")
        await pilot.pause()
        assert type(app.screen).__name__ == "ArtifactModal"
        assert app.screen.ref is None
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_cancel_asks_and_reports_errors_as_notifications():
    job = jobs.create_job("train", {"model": "x"})
    _fake_progress(job)  # succeeded: cancelling it is refused with a hint
    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(JobTable)
        assert await _until(pilot, lambda: table.row_count == 1)
        await pilot.press("c")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmModal"
        await pilot.press("y")
        assert await _until(pilot, lambda: any("already succeeded" in (n.title or "") for n in app.notes))
        note = next(n for n in app.notes if "already succeeded" in (n.title or ""))
        assert note.severity == "error" and "hint: nothing to cancel" in note.message
        assert app.is_running


def test_progress_eta_for_a_running_job():
    from tuneterm.tui.job_progress import progress

    events = [{"step": s, "max_steps": 10, "loss": 1.0, "time": 100.0 + 2 * s} for s in range(1, 5)]
    running = progress(events, active=True)
    assert running.step == 4 and running.total == 10
    assert running.eta_s == 12.0  # 2 s a step, 6 steps to go
    assert "ETA 12s" in running.line()
    assert progress(events, active=False).eta_s is None


async def test_a_real_detached_job_cancel_resume_and_artifact():
    """Through the real launcher with the torch-free ``sleep`` job kind."""
    done = jobs.create_job("sleep", {"steps": 3, "step_seconds": 0.01, "artifact": True})
    jobs.launch(done.id)
    long = jobs.create_job("sleep", {"steps": 400, "step_seconds": 0.05})
    jobs.launch(long.id)
    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        table = screen.query_one(JobTable)
        assert await _until(pilot, lambda: table.row_count == 2)
        assert await _until(pilot, lambda: getattr(screen.jobs.get(long.id), "state", "") == "running", tries=200)
        assert await _until(pilot, lambda: getattr(screen.jobs.get(done.id), "state", "") == "succeeded", tries=200)

        table.move_cursor(row=table.job_ids.index(long.id))
        assert await _until(pilot, lambda: screen.selected == long.id and screen.query_one(LossChart).train)
        await pilot.press("c", "y")
        assert await _until(pilot, lambda: screen.jobs[long.id].state == "cancelled", tries=300)
        await pilot.press("r")
        assert await _until(pilot, lambda: screen.jobs[long.id].state == "running", tries=300)
        assert any(f"resumed {long.id}" in n.message for n in app.notes)
        await pilot.press("c", "y")
        assert await _until(pilot, lambda: screen.jobs[long.id].state == "cancelled", tries=300)

        table.move_cursor(row=table.job_ids.index(done.id))
        assert await _until(pilot, lambda: screen.selected == done.id)
        await pilot.press("o")
        await pilot.pause()
        assert app.screen.ref == f"job:{done.id}"
        await pilot.press("c")  # copy the reference
        await pilot.press("escape")
    # Closing the workbench changed nothing for the jobs.
    assert jobs.get_job(done.id).state == "succeeded"


async def test_a_waiting_job_says_what_it_waits_for_in_the_table():
    """Two jobs for one CPU slot (real processes, the torch-free ``sleep`` kind): the second stays queued
    and its row says what it waits for, as `jobs ls` does."""
    first = jobs.create_job("sleep", {"steps": 400, "step_seconds": 0.05}, devices=["cpu"])
    jobs.launch(first.id)
    for _ in range(400):
        if jobs.get_job(first.id).state == "running":
            break
        import time

        time.sleep(0.05)
    second = jobs.create_job("sleep", {"steps": 1, "step_seconds": 0.01}, devices=["cpu"])
    jobs.launch(second.id)
    app = RecordingApp(start="jobs")
    try:
        async with app.run_test(size=(140, 30)) as pilot:
            table = app.screen.query_one(JobTable)

            def cell() -> str:
                if second.id not in table.job_ids:
                    return ""
                return str(table.get_row(second.id)[3])

            assert await _until(pilot, lambda: cell().startswith("waiting for the CPU: job "), tries=300), cell()
            assert first.id in cell()
    finally:
        jobs.cancel(first.id, wait=20)
        jobs.wait_for(second.id, 60)
