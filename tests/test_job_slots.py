"""Device slots with real job processes (the torch-free ``sleep`` kind): jobs that must wait stay
queued and say what they wait for, run first come first served, can be cancelled while queued, and a
killed job frees its slot."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tuneterm.core import jobs
from tuneterm.core.jobs import slots


def _wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _train_times(job_id):
    events, _ = jobs.read_events(job_id)
    return [e["time"] for e in events if e.get("type") == "train"]


def _waiting_note(job_id):
    note = jobs.get_job(job_id).note
    return note if note and note.startswith("waiting") else None


def _gpu_in_log(job):
    line = next(x for x in (job.dir / "log.txt").read_text().splitlines() if "running on " in x)
    return line.split("running on ", 1)[1].strip()


def _start(steps, devices=("cpu",), step_seconds=0.05):
    job = jobs.create_job("sleep", {"steps": steps, "step_seconds": step_seconds}, devices=list(devices))
    jobs.launch(job.id)
    return job


def test_three_jobs_on_one_cpu_slot_run_one_at_a_time_in_order_and_say_what_they_wait_for(cli):
    first = _start(400)  # holds the slot until it is cancelled below
    _wait_until(lambda: _train_times(first.id))
    second = _start(3)
    _wait_until(lambda: _waiting_note(second.id))  # its ticket is in the queue before the third's
    third = _start(3)
    _wait_until(lambda: _waiting_note(third.id))
    assert jobs.get_job(third.id).state == "queued"
    second_now = jobs.get_job(second.id)
    assert second_now.state == "queued"
    assert second_now.note == f"waiting for the CPU: job {first.id}"
    assert jobs.get_job(third.id).note == f"waiting for the CPU: job {first.id}; 1 queued ahead (first: job {second.id})"
    code, out, _ = cli("jobs", "ls")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith(second.id))
    assert f"queued (waiting for the CPU: job {first.id})" in line
    code, out, _ = cli("jobs", "show", second.id)
    assert f"waiting for the CPU: job {first.id}" in out
    jobs.cancel(first.id)  # it stops at its next step and frees the slot
    done = [jobs.wait_for(j.id, 60) for j in (first, second, third)]
    assert [j.state for j in done] == ["cancelled", "succeeded", "succeeded"]
    spans = [(min(_train_times(j.id)), max(_train_times(j.id))) for j in (first, second, third)]
    assert spans[0][1] <= spans[1][0] and spans[1][1] <= spans[2][0]  # never two at once, in ticket order


def test_two_slots_per_device_from_the_settings(monkeypatch):
    monkeypatch.setenv("TUNETERM_JOBS__MAX_RUNNING", "2")
    a, b = _start(400), _start(400)
    _wait_until(lambda: _train_times(a.id) and _train_times(b.id))  # both run at once
    c = _start(2)
    note = _wait_until(lambda: _waiting_note(c.id))
    assert note.startswith("waiting for the CPU: job ") and a.id in note and b.id in note
    jobs.cancel(b.id)
    assert jobs.wait_for(c.id, 60).state == "succeeded"
    assert jobs.get_job(a.id).state == "running"
    jobs.cancel(a.id, wait=20)


def test_a_queued_job_cancels_and_a_killed_job_frees_its_slot():
    holder = _start(400)
    _wait_until(lambda: _train_times(holder.id))
    waiting = _start(2)
    _wait_until(lambda: _waiting_note(waiting.id))
    jobs.cancel(waiting.id)
    cancelled = jobs.wait_for(waiting.id, 30)
    assert cancelled.state == "cancelled" and not _train_times(waiting.id)
    later = _start(2)
    _wait_until(lambda: _waiting_note(later.id))
    os.killpg(jobs.get_job(holder.id).pid, signal.SIGKILL)  # the kernel drops its lock
    assert jobs.wait_for(later.id, 60).state == "succeeded"
    assert jobs.wait_for(holder.id, 30).state == "failed"


def test_acquire_in_process_any_gpu_takes_a_free_one_and_names_the_holder(monkeypatch, tmp_path):
    """The torch-free function sweeps use: two GPUs, ``cuda:*`` picks the free one; a third waits."""
    monkeypatch.setenv("TUNETERM_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    one = slots.acquire("job-one", ["cuda:0"], root=tmp_path)
    two = slots.acquire("job-two", [slots.ANY_GPU], root=tmp_path)
    assert two.devices == ["cuda:1"] and two.gpus == [1]
    assert slots.holders(tmp_path) == {"cuda0.0": "job-one", "cuda1.0": "job-two"}
    notes = []
    stop_after = iter(range(3))
    try:
        slots.acquire("job-three", ["cuda:0"], root=tmp_path, on_wait=notes.append,
                      should_stop=lambda: next(stop_after, None) is None, poll=0.01)
        raise AssertionError("cuda:0 is taken")
    except slots.Cancelled:
        pass
    assert notes == ["waiting for GPU 0: job job-one"]
    one.release()
    three = slots.acquire("job-three", ["cuda:0"], root=tmp_path)
    assert three.devices == ["cuda:0"]
    assert not list((tmp_path / ".slots" / "queue").glob("*.ticket"))
    two.release()
    three.release()


def test_gpus_flag_is_checked_against_the_machine(monkeypatch):
    monkeypatch.setenv("TUNETERM_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert slots.parse_gpus("0,1") == ["cuda:0", "cuda:1"]
    for bad in ("2", "a", "0,0", ""):
        try:
            slots.parse_gpus(bad)
            raise AssertionError(bad)
        except slots.UsageError as exc:
            assert "--gpus" in exc.render()


def test_jobs_asking_for_any_gpu_get_one_each_and_see_only_it(monkeypatch):
    """Two GPUs (``TUNETERM_GPUS`` stands in for nvidia-smi here): two jobs run at once, each with its own
    ``CUDA_VISIBLE_DEVICES``; a third waits for whichever frees first."""
    import json

    monkeypatch.setenv("TUNETERM_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    a, b = _start(400, devices=[slots.ANY_GPU]), _start(400, devices=[slots.ANY_GPU])
    _wait_until(lambda: _train_times(a.id) and _train_times(b.id))
    c = _start(2, devices=[slots.ANY_GPU])
    assert _wait_until(lambda: _waiting_note(c.id)).startswith("waiting for a GPU: job ")
    gpu_of = {j.id: _gpu_in_log(j) for j in (a, b)}
    assert sorted(gpu_of.values()) == ["GPU 0", "GPU 1"]
    jobs.cancel(b.id)
    assert jobs.wait_for(c.id, 60).state == "succeeded"
    seen = json.loads((c.dir / "output" / "result.json").read_text())["cuda_visible_devices"]
    assert f"GPU {seen}" == gpu_of[b.id]  # the GPU b freed, and only it
    jobs.cancel(a.id, wait=20)


def test_train_gpus_flag_goes_into_the_spec_and_bad_indexes_are_refused(cli, tiny_model_dir, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("TUNETERM_GPUS", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    data = str(Path(__file__).resolve().parents[1] / "sample_data" / "tickets" / "train.jsonl")
    base = ("train", "--model", str(tiny_model_dir), "--data", data, "--method", "lora", "train.max_steps=1")
    code, _, err = cli(*base, "--gpus", "3")
    assert code == 2 and "no GPU 3 on this machine" in err and "GPUs here" in err
    code, _, err = cli(*base, "--gpus", "0", "--nproc", "2")
    assert code == 2 and "--gpus names one GPU per process" in err
    assert not jobs.list_jobs()
    code, out, err = cli(*base, "--gpus", "0")
    assert code == 0, err
    [job] = jobs.list_jobs()
    assert jobs.read_spec(job.dir)["job"]["devices"] == ["cuda:0"]
    jobs.cancel(job.id)
    jobs.wait_for(job.id, 120)


@pytest.mark.gpu
def test_on_a_gpu_machine_the_gpus_come_from_nvidia_smi_and_a_job_sees_its_own(monkeypatch):
    import json

    import torch

    monkeypatch.delenv("TUNETERM_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert slots.gpu_ids() == list(range(torch.cuda.device_count()))
    assert slots.request_for("train", [], 1) == [slots.ANY_GPU]
    job = _start(2, devices=[slots.ANY_GPU])
    assert jobs.wait_for(job.id, 60).state == "succeeded"
    assert json.loads((job.dir / "output" / "result.json").read_text())["cuda_visible_devices"] == "0"


def test_gpus_and_force_on_every_job_creating_command(cli, tiny_model_dir, tmp_path, monkeypatch):
    """quantize, distill, feature and `eval --job` take --gpus (checked, frozen into the spec) like train;
    quantize and the train aliases take --force for the disk check; eval without --job refuses --gpus."""
    from collections import namedtuple
    from pathlib import Path
    import shutil

    monkeypatch.setenv("TUNETERM_GPUS", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    repo = Path(__file__).resolve().parents[1]
    data = str(repo / "sample_data" / "tickets" / "train.jsonl")
    model = str(tiny_model_dir)
    for cmd in (("quantize", model, "--method", "int8-dynamic"),
                ("distill", "--teacher", model, "--data", data),
                ("feature", "--model", model, "--data", data),
                ("eval", str(repo / "evals" / "tickets"), "--models", model, "--job")):
        code, _, err = cli(*cmd, "--gpus", "3")
        assert code == 2 and "no GPU 3 on this machine" in err, (cmd, err)
    code, _, err = cli("eval", str(repo / "evals" / "tickets"), "--models", model, "--gpus", "0")
    assert code == 2 and "add --job" in err
    assert not jobs.list_jobs()

    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(real(p).total, real(p).total - 10_000, 10_000))
    code, _, err = cli("quantize", model, "--method", "int8-dynamic", "--gpus", "0")
    assert code == 5 and "not enough disk space" in err and "the quantized model" in err
    assert not jobs.list_jobs()
    code, out, err = cli("quantize", model, "--method", "int8-dynamic", "--gpus", "0", "--force")
    assert code == 0, err
    monkeypatch.setattr(shutil, "disk_usage", real)
    code, out, err = cli("eval", str(repo / "evals" / "tickets"), "--models", model, "--job", "--gpus", "0",
                         "--limit", "2")
    assert code == 0 and "started eval job" in out, err
    made = {j.kind: j for j in jobs.list_jobs()}
    assert set(made) == {"quantize", "eval"}
    for job in made.values():
        assert jobs.read_spec(job.dir)["job"]["devices"] == ["cuda:0"]
        jobs.cancel(job.id)
        jobs.wait_for(job.id, 120)
