"""Jobs through the real launcher with the torch-free ``sleep`` kind: detach, tail, SIGTERM,
SIGKILL, crash, resume, the GPU queue, and the CLI. No torch is imported here."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tuneterm.core import jobs
from tuneterm.core.errors import JobStateError, NotFoundError


def _wait_until(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _steps_done(job_id):
    events, _ = jobs.read_events(job_id)
    return [e["step"] for e in events if e.get("type") == "train"]


def _start(config, **kw):
    job = jobs.create_job("sleep", config, **kw)
    jobs.launch(job.id)
    return job


def test_detached_job_succeeds_with_events_log_and_folder_layout():
    job = _start({"steps": 4, "step_seconds": 0.02}, name="smoke")
    assert job.state in ("queued", "running")
    info = jobs.wait_for(job.id, 30)
    assert info.state == "succeeded", jobs.tail_log(job.id)
    assert info.exit_code == 0 and info.error is None
    for name in ("spec.toml", "pid", "status.json", "events.jsonl", "log.txt", "checkpoints", "output"):
        assert (info.dir / name).exists(), name
    pid = json.loads((info.dir / "pid").read_text())
    assert pid["pgid"] == pid["pid"]  # its own session: SSH hang-ups do not reach it
    assert _steps_done(job.id) == [1, 2, 3, 4]
    assert info.last_event["step"] == 4
    events, offset = jobs.read_events(job.id)
    more, offset2 = jobs.read_events(job.id, offset)
    assert more == [] and offset2 == offset
    assert any("succeeded" in line for line in jobs.tail_log(job.id))
    assert json.loads((info.dir / "output" / "result.json").read_text()) == {"steps": 4, "total": 10}
    assert jobs.read_spec(info.dir)["config"] == {"steps": 4, "step_seconds": 0.02}


def test_sigterm_cancels_keeps_checkpoint_and_resume_finishes_the_count():
    job = _start({"steps": 40, "step_seconds": 0.05})
    _wait_until(lambda: len(_steps_done(job.id)) >= 3)
    jobs.cancel(job.id)
    info = jobs.wait_for(job.id, 30)
    assert info.state == "cancelled", jobs.tail_log(job.id)
    done = _steps_done(job.id)
    assert 3 <= len(done) < 40
    saved = json.loads((info.dir / "checkpoints" / "state.json").read_text())
    assert saved["step"] == done[-1]

    jobs.resume(job.id)
    info = jobs.wait_for(job.id, 60)
    assert info.state == "succeeded", jobs.tail_log(job.id)
    steps = _steps_done(job.id)
    assert steps == list(range(1, 41))  # continuous: no step lost, none repeated
    assert json.loads((info.dir / "output" / "result.json").read_text())["total"] == sum(range(1, 41))


def test_sigkill_shows_failed_then_resumes_from_last_checkpoint():
    job = _start({"steps": 400, "step_seconds": 0.05})
    _wait_until(lambda: len(_steps_done(job.id)) >= 2)
    pid = json.loads((job.dir / "pid").read_text())
    os.killpg(pid["pgid"], signal.SIGKILL)
    info = _wait_until(lambda: (lambda j: j if j.state == "failed" else None)(jobs.get_job(job.id)))
    assert "ended without reporting" in info.error
    # the rediscovered state is recorded, so a second reader agrees
    assert json.loads((job.dir / "status.json").read_text())["state"] == "failed"
    step = json.loads((job.dir / "checkpoints" / "state.json").read_text())["step"]
    assert step >= 2


def test_crash_is_failed_with_the_traceback_kept():
    job = _start({"steps": 5, "step_seconds": 0.01, "crash_at": 2})
    info = jobs.wait_for(job.id, 30)
    assert info.state == "failed"
    assert info.error.startswith("RuntimeError: deliberate crash at step 2")
    log = "\n".join(jobs.tail_log(job.id, 200))
    assert "Traceback (most recent call last)" in log and "sleep.py" in log
    assert _steps_done(job.id) == [1, 2]


def test_stale_heartbeat_of_a_live_process_is_reported(monkeypatch):
    monkeypatch.setenv("TUNETERM_HEARTBEAT_S", "600")
    job = _start({"steps": 400, "step_seconds": 0.05})
    _wait_until(lambda: _steps_done(job.id))
    monkeypatch.setenv("TUNETERM_JOB_STALE_S", "0.2")
    time.sleep(0.4)
    info = jobs.get_job(job.id)
    assert info.state == "failed" and "no heartbeat" in info.error
    monkeypatch.setenv("TUNETERM_JOB_STALE_S", "120")
    jobs.cancel(job.id, wait=20)
    assert jobs.wait_for(job.id, 30).state == "cancelled"


def test_jobs_on_the_same_device_queue_behind_each_other():
    # the first job holds the slot until it is cancelled, so the second is seen waiting however slow the box
    first = _start({"steps": 400, "step_seconds": 0.05, "device": "cuda:7"})
    _wait_until(lambda: _steps_done(first.id))
    second = _start({"steps": 2, "step_seconds": 0.01, "device": "cuda:7"})
    waiting = _wait_until(lambda: (lambda j: j if j.note and "waiting for GPU 7: job" in j.note else None)(
        jobs.get_job(second.id)))
    assert waiting.state == "queued"
    assert first.id in waiting.note
    jobs.cancel(first.id, wait=20)
    a = jobs.wait_for(first.id, 30)
    b = jobs.wait_for(second.id, 30)
    assert (a.state, b.state) == ("cancelled", "succeeded")
    ev_a, _ = jobs.read_events(first.id)
    ev_b, _ = jobs.read_events(second.id)
    first_done = max(e["time"] for e in ev_a if e.get("type") == "train")
    second_start = min(e["time"] for e in ev_b if e.get("type") == "train")
    assert second_start >= first_done
    assert any(e.get("type") == "queue" and "cuda:7" in e.get("acquired", ()) for e in ev_b)


def test_remove_is_refused_while_running_and_ids_resolve(cli):
    job = _start({"steps": 400, "step_seconds": 0.05})
    _wait_until(lambda: _steps_done(job.id))
    with pytest.raises(JobStateError):
        jobs.remove(job.id)
    code, _, err = cli("jobs", "rm", job.id)
    assert code == 2 and f"job {job.id} is running" in err  # refused because of its state: a usage error
    assert job.dir.is_dir()
    assert jobs.resolve_id(job.id[:-2]) == job.id
    assert jobs.resolve_id(job.id.rsplit("-", 1)[1]) == job.id
    assert jobs.resolve_id("last") == job.id
    jobs.cancel(job.id, wait=20)
    jobs.wait_for(job.id, 30)
    jobs.remove(job.id)
    assert not job.dir.exists()
    with pytest.raises(NotFoundError):
        jobs.get_job(job.id)


def test_cli_ls_show_logs_cancel_resume_rm(cli):
    job = _start({"steps": 3, "step_seconds": 0.01, "artifact": True}, name="cli-test")
    jobs.wait_for(job.id, 30)
    code, out, _ = cli("jobs", "ls")
    assert code == 0 and job.id in out and "succeeded" in out and "cli-test" in out
    code, out, _ = cli("jobs", "ls", "--json")
    data = json.loads(out)
    assert data[0]["id"] == job.id and data[0]["model_ref"] == f"job:{job.id}"
    code, out, _ = cli("jobs", "show", job.id, "--json")
    assert json.loads(out)["spec"]["config"]["steps"] == 3
    code, out, _ = cli("jobs", "show", job.id)
    assert "succeeded" in out and f"job:{job.id}" in out
    code, out, err = cli("jobs", "logs", job.id, "--follow")
    assert code == 0 and "done: 3 steps" in out and "succeeded" in err
    code, _, err = cli("jobs", "resume", job.id)
    assert code == 2 and "already succeeded" in err  # refused because of the job's state: a usage error
    code, _, err = cli("jobs", "cancel", job.id)
    assert code == 2 and "already succeeded" in err
    code, _, err = cli("jobs", "show", "nope")
    assert code == 4 and "no job 'nope'" in err
    code, out, _ = cli("jobs", "rm", job.id)
    assert code == 0 and not job.dir.exists()


def test_cli_follow_a_cancelled_job_returns_nonzero(cli):
    job = _start({"steps": 400, "step_seconds": 0.05})
    _wait_until(lambda: _steps_done(job.id))
    code, out, _ = cli("jobs", "cancel", job.id, "--wait", "20")
    assert code == 0
    code, out, err = cli("jobs", "logs", job.id, "--follow")
    assert code == 1 and "cancelled" in err and "stop requested (SIGTERM)" in out


def test_cancel_in_the_first_moments_of_the_child_ends_cancelled():
    # The cancel reaches the child while its interpreter is still starting, before its SIGTERM handler
    # exists: the signal waits (the launcher starts the child with it blocked) and the child records it.
    for _ in range(3):
        job = jobs.create_job("sleep", {"steps": 400, "step_seconds": 0.05})
        jobs.launch(job.id)
        jobs.cancel(job.id)
        info = jobs.wait_for(job.id, 30)
        assert info.state == "cancelled", (info.error, jobs.tail_log(job.id))
        assert info.error is None and not _steps_done(job.id)
        assert any("stop requested (SIGTERM)" in line for line in jobs.tail_log(job.id))


def test_a_process_killed_by_the_cancel_itself_shows_cancelled_not_failed():
    # A child that dies of the SIGTERM (no handler of its own) after a cancel was asked for
    import subprocess
    import sys

    from tuneterm.core.fsutil import atomic_write_json
    from tuneterm.core.jobs import store

    job = jobs.create_job("sleep", {"steps": 1})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        atomic_write_json(job.dir / "pid", {"pid": proc.pid, "pgid": proc.pid,
                                            "create_time": store.process_create_time(proc.pid)})
        store.update_status(job.dir, state="running")
        jobs.cancel(job.id, wait=20)  # waits until the process is gone (a zombie counts as gone)
        assert not store.pid_alive(proc.pid)
        info = jobs.get_job(job.id)
        assert info.state == "cancelled" and info.error is None
        assert store.read_status(job.dir)["state"] == "cancelled"  # recorded, not only shown
        assert proc.wait(5) == -signal.SIGTERM  # and its exit status is still ours to read
    finally:
        if proc.poll() is None:
            proc.kill()


def test_pid_alive_leaves_a_finished_child_for_its_popen_to_reap():
    """`train --foreground` holds the child's Popen and exits with its status: asking whether the
    child runs must not reap it (Popen.wait would then say 0 whatever the child returned)."""
    import subprocess
    import sys

    from tuneterm.core.jobs import store

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.monotonic() + 30
    while store.pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.pid_alive(proc.pid)
    assert proc.wait(5) == 3


def test_two_processes_updating_the_status_lose_no_field(tmp_path):
    """The child's heartbeats and a cancel write status.json at the same time: each
    read-change-write holds the job's status lock, so neither loses the other's field."""
    import subprocess
    import sys

    from tuneterm.core.jobs import store

    folder = tmp_path / "job"
    folder.mkdir()
    store.write_status(folder, {"state": "running"})
    bump = ("import sys; from pathlib import Path; from tuneterm.core.jobs import store\n"
            "for i in range(150): store.update_status(Path(sys.argv[1]), **{sys.argv[2]: i})")
    procs = [subprocess.Popen([sys.executable, "-c", bump, str(folder), key]) for key in ("heartbeat_n", "progress_n")]
    assert [p.wait(120) for p in procs] == [0, 0]
    status = store.read_status(folder)
    assert (status["state"], status["heartbeat_n"], status["progress_n"]) == ("running", 149, 149)
