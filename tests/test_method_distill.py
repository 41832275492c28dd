"""Distillation on the tiny model: a 1-layer student cut from the 2-layer teacher; its KL falls."""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.core import jobs, modelref
from tuneterm.core.workspace import workspace
from tuneterm.workers.kinds import distill
from tuneterm.workers.jobctx import JobContext
from stop_context import StopAtStep

REPO = Path(__file__).resolve().parents[1]


def test_student_kl_to_teacher_falls(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join((REPO / "sample_data/tickets/train.jsonl").read_text().splitlines()[:16]) + "\n")
    job = jobs.create_job("distill", {"teacher": str(tiny_model_dir), "keep_layers": [0], "data": str(data),
                                      "steps": 15, "lr": 1e-3, "batch_size": 8, "temperature": 2.0, "alpha": 1.0})
    distill.run(JobContext(job.dir))
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    report = next(e for e in events if e["type"] == "report")
    assert report["kl_after"] < report["kl_before"]
    assert report["student_params"] < report["teacher_params"]
    assert modelref.job_artifact(job.id, workspace().jobs_dir).kind == "model"
    from huggingface_hub import ModelCard

    card = ModelCard((job.dir / "output" / "README.md").read_text())  # the Hub's conventions
    assert card.data.library_name == "transformers" and "distill" in card.data.tags


def test_a_stopped_distillation_resumes_from_its_checkpoint(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join((REPO / "sample_data/tickets/train.jsonl").read_text().splitlines()[:16]) + "\n")
    job = jobs.create_job("distill", {"teacher": str(tiny_model_dir), "keep_layers": [0], "data": str(data),
                                      "steps": 6, "lr": 1e-3, "batch_size": 8, "save_steps": 100})
    distill.run(StopAtStep(job.dir, at=2))
    assert list((job.dir / "checkpoints").glob("checkpoint-2"))
    assert not (job.dir / "output" / "artifact.json").exists()

    distill.run(JobContext(job.dir, resume=True))
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # continued at 3, not restarted
    assert modelref.job_artifact(job.id, workspace().jobs_dir).kind == "model"
