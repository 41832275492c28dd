"""A full disk: `tuneterm train` refuses with the figures when the disk is too small (``--force`` tries
anyway), and a real train job whose disk fills at a checkpoint fails with one sentence, keeps its last
good checkpoint, stays readable and resumes."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

from tuneterm.core import jobs, recipes
from tuneterm.core.jobs import disk

REPO = Path(__file__).resolve().parents[1]


def _data(tmp_path, n=16) -> Path:
    lines = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_job_whose_disk_fills_at_a_checkpoint_fails_with_one_sentence_and_keeps_the_last_good_one(
        tiny_model_dir, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("TUNETERM_EXTRA_KINDS", "sleep=tests.kinds.sleep,fulldisk=tests.kinds.fulldisk")
    config = recipes.resolve("lora", overrides=["train.max_steps=3", "train.batch_size=2", "log.every_steps=1",
                                                "checkpoint.every_steps=1", "checkpoint.keep=3", "lora.r=4"])
    config.update(model=str(tiny_model_dir), data=str(_data(tmp_path)), fulldisk_step=2)
    job = jobs.create_job("fulldisk", config)
    jobs.launch(job.id)
    failed = jobs.wait_for(job.id, 240)
    assert failed.state == "failed", jobs.tail_log(job.id, 40)
    assert failed.error.startswith(f"the disk is full in {job.dir / 'checkpoints' / 'checkpoint-2'}"), failed.error
    assert "is needed" in failed.error and f"`tuneterm jobs resume {job.id}`" in failed.error
    assert "\n" not in failed.error
    log = (job.dir / "log.txt").read_text()
    assert "Traceback" not in log and "removed the incomplete checkpoint checkpoint-2" in log
    names = sorted(p.name for p in (job.dir / "checkpoints").iterdir())
    assert names == ["checkpoint-1"]
    assert (job.dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    json.loads((job.dir / "status.json").read_text())  # the records stay readable
    code, out, _ = cli("jobs", "show", job.id)
    assert code == 0 and "the disk is full" in out
    jobs.resume(job.id)
    done = jobs.wait_for(job.id, 240)
    assert done.state == "succeeded", jobs.tail_log(job.id, 40)
    assert f"resuming from {job.dir / 'checkpoints' / 'checkpoint-1'}" in (job.dir / "log.txt").read_text()


def test_train_refuses_with_the_figures_when_the_disk_is_too_small_and_force_tries_anyway(
        cli, tiny_model_dir, tmp_path, monkeypatch):
    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(real(p).total, real(p).total - 10_000, 10_000))
    args = ("train", "--model", str(tiny_model_dir), "--data", str(_data(tmp_path)), "--method", "full",
            "train.max_steps=1", "train.batch_size=2")
    code, out, err = cli(*args)
    assert code != 0 and not jobs.list_jobs()
    assert "not enough disk space for this job" in err and "10 KB is free" in err
    assert "checkpoint(s) of the weights with optimizer state" in err and "--force" in err
    code, out, err = cli(*args, "--force")
    assert code == 0, err
    [job] = jobs.list_jobs()
    jobs.cancel(job.id)
    jobs.wait_for(job.id, 120)


def test_the_estimate_counts_parameters_from_the_files(tiny_model_dir):
    params, cfg, gguf = disk.model_facts(str(tiny_model_dir))
    from safetensors.torch import load_file

    tensors = load_file(tiny_model_dir / "model.safetensors")
    assert params == sum(t.numel() for t in tensors.values()) > 0
    assert gguf is None and cfg["hidden_size"] == 64
    full = dict(disk.estimate("train", {"model": str(tiny_model_dir), "method": "full", "checkpoint": {"keep": 2}}))
    assert full["2 checkpoint(s) of the weights with optimizer state"] == 2 * params * 12
    assert full["the model"] == params * 4
