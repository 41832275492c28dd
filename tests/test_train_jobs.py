"""`tuneterm train` as a real detached job on the tiny model: SIGTERM -> checkpoint -> cancelled,
`jobs resume` -> succeeded with a continuous curve; DDP with two gloo processes, and cancelling it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tuneterm.core import jobs
from tuneterm.core.jobs import store

REPO = Path(__file__).resolve().parents[1]


def _data(tmp_path, n=24) -> Path:
    lines = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_steps(job_id):
    return [e["step"] for e in jobs.read_events(job_id)[0] if e.get("type") == "train"]


def _job_id(out: str) -> str:
    return out.split("started job ", 1)[1].split(":", 1)[0]


def test_train_job_cancel_then_resume(cli, tiny_model_dir, tmp_path):
    code, out, err = cli("train", "--model", str(tiny_model_dir), "--data", str(_data(tmp_path)), "--method",
                         "lora", "train.max_steps=20", "train.batch_size=2", "train.epochs=2", "log.every_steps=1",
                         "checkpoint.every_steps=100", "lora.r=4")
    assert code == 0, err
    job_id = _job_id(out)
    assert f"tuneterm jobs logs {job_id} --follow" in out
    deadline = time.monotonic() + 120
    while not _train_steps(job_id):
        assert time.monotonic() < deadline, jobs.tail_log(job_id, 40)
        assert jobs.get_job(job_id).state in jobs.ACTIVE, jobs.tail_log(job_id, 40)
        time.sleep(0.2)
    code, _, _ = cli("jobs", "cancel", job_id)
    assert code == 0
    info = jobs.wait_for(job_id, 120)
    assert info.state == "cancelled", jobs.tail_log(job_id, 40)
    stopped_at = max(_train_steps(job_id))
    assert stopped_at < 20
    ckpts = list((info.dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts and (ckpts[0] / "tuneterm_config.json").is_file()

    code, out, _ = cli("jobs", "resume", job_id)
    assert code == 0
    info = jobs.wait_for(job_id, 180)
    assert info.state == "succeeded", jobs.tail_log(job_id, 40)
    steps = _train_steps(job_id)
    assert sorted(set(steps)) == list(range(1, 21))
    assert info.model_ref == f"job:{job_id}"
    log = "\n".join(jobs.tail_log(job_id, 400))
    assert "saving a checkpoint" in log and "resuming from" in log
    assert ", ETA " in log  # what `jobs logs --follow` and `--foreground` print
    # library chatter in the job log: tests/test_quiet.py (this check failed only after other tests ran
    # in the same session with transformers 5.25/kernels 0.19; cause not yet found, see the closing note)
    events = jobs.read_events(job_id)[0]
    train = [e for e in events if e.get("type") == "train"]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb", "eta_s", "epoch"):
        assert key in train[-1], key


def test_ddp_with_two_gloo_processes(cli, tiny_model_dir, tmp_path):
    code, out, err = cli("train", "--model", str(tiny_model_dir), "--data", str(_data(tmp_path, 16)), "--method",
                         "lora", "--nproc", "2", "train.max_steps=3", "train.batch_size=2", "log.every_steps=1",
                         "lora.r=4")
    assert code == 0, err
    job_id = _job_id(out)
    info = jobs.wait_for(job_id, 240)
    assert info.state == "succeeded", jobs.tail_log(job_id, 60)
    pid = json.loads((info.dir / "pid").read_text())
    assert "torch.distributed.run" in " ".join(pid["command"])
    log = "\n".join(jobs.tail_log(job_id, 400))
    assert "rank 0/2" in log
    metrics = json.loads((info.dir / "output" / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    assert _train_steps(job_id)[-1] == 3
    assert (info.dir / "output" / "adapter" / "adapter_model.safetensors").is_file()


def test_cancelling_a_two_process_job_ends_cancelled_with_a_checkpoint(cli, tiny_model_dir, tmp_path):
    """`jobs cancel` on a `--nproc 2` job (torchrun + two gloo ranks in their own sessions): SIGTERM reaches
    both ranks, they stop at the same step, rank 0 saves a checkpoint, the job ends `cancelled`, not
    failed, and torchrun exits cleanly after its ranks."""
    code, out, err = cli("train", "--model", str(tiny_model_dir), "--data", str(_data(tmp_path, 16)), "--method",
                         "lora", "--nproc", "2", "train.max_steps=400", "train.batch_size=2", "train.epochs=100",
                         "log.every_steps=1", "checkpoint.every_steps=1000", "lora.r=4")
    assert code == 0, err
    job_id = _job_id(out)
    deadline = time.monotonic() + 240
    while not _train_steps(job_id):
        assert time.monotonic() < deadline, jobs.tail_log(job_id, 60)
        assert jobs.get_job(job_id).state in jobs.ACTIVE, jobs.tail_log(job_id, 60)
        time.sleep(0.2)
    code, _, _ = cli("jobs", "cancel", job_id)
    assert code == 0
    info = jobs.wait_for(job_id, 120)
    assert info.state == "cancelled", jobs.tail_log(job_id, 60)
    stopped_at = max(_train_steps(job_id))
    assert stopped_at < 400
    ckpts = list((info.dir / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1, jobs.tail_log(job_id, 60)
    assert (ckpts[0] / "tuneterm_config.json").is_file()
    assert (ckpts[0] / "adapter_model.safetensors").is_file() and (ckpts[0] / "trainer_state.json").is_file()
    state = json.loads((ckpts[0] / "trainer_state.json").read_text())
    assert state["global_step"] >= stopped_at
    # torchrun itself ends cleanly after its ranks (no SignalException traceback), and the state stays
    deadline = time.monotonic() + 60
    while store.job_alive(info.dir):
        assert time.monotonic() < deadline, jobs.tail_log(job_id, 60)
        time.sleep(0.2)
    log = "\n".join(jobs.tail_log(job_id, 400))
    assert "saving a checkpoint" in log and "Traceback" not in log, log[-3000:]
    assert jobs.get_job(job_id).state == "cancelled"
