"""Feature-based classifier on the tiny model: beats chance on an easy synthetic set, caches features,
writes a ``classifier`` artifact that ``job:ID`` resolves, and predicts labels."""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.core import jobs, modelref
from tuneterm.core.workspace import workspace
from tuneterm.workers import classifier
from tuneterm.workers.kinds import feature
from tuneterm.workers.jobctx import JobContext

from classifier_jobs import write_examples


def _write(folder: Path, split: str, n: int, seed: int) -> None:
    write_examples(folder / f"{split}.jsonl", n, seed)


def test_feature_classifier_beats_chance_and_resolves_as_job(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "easy"
    data.mkdir()
    _write(data, "train", 40, 1)
    _write(data, "val", 20, 2)
    _write(data, "test", 20, 3)
    job = jobs.create_job("feature", {"model": str(tiny_model_dir), "dataset": str(data),
                                      "layer": -1, "pooling": "mean"})
    feature.run(JobContext(job.dir))
    log = capsys.readouterr().out  # the job's log lines: the extraction says how far it got, with an ETA
    assert "extracting features of train.jsonl: 16/40 texts, ETA " in log, log
    assert "extracting features of train.jsonl: 40/40 texts\n" in log, log
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    assert metrics["chance"] == 0.5
    assert metrics["val_accuracy"] > 0.75 and metrics["test_accuracy"] > 0.75
    cache = list((workspace().root / "features").glob("*.npy"))
    assert len(cache) == 3  # train, val, test extracted once each
    art = modelref.job_artifact(job.id, workspace().jobs_dir)
    assert art.kind == "classifier" and art.base == str(tiny_model_dir)
    labels = classifier.predict(["refund invoice charge card billing refund",
                              "parcel courier delivery shipment warehouse parcel"], f"job:{job.id}")
    assert labels == ["payments-ops", "logistics"]
    # a second run reuses the cached features
    before = sorted(p.stat().st_mtime_ns for p in cache)
    classifier.train_classifier(str(tiny_model_dir), str(data), tmp_path / "again", log=lambda m: None)
    assert sorted(p.stat().st_mtime_ns for p in (workspace().root / "features").glob("*.npy")) == before


def test_chat_answers_with_the_label_of_a_classifier_job(tiny_model_dir, tmp_path, cli):
    data = tmp_path / "easy"
    data.mkdir()
    _write(data, "train", 30, 4)
    job = jobs.create_job("feature", {"model": str(tiny_model_dir), "dataset": str(data / "train.jsonl")})
    feature.run(JobContext(job.dir))
    code, out, _ = cli("chat", f"job:{job.id}", "parcel courier delivery shipment warehouse parcel")
    assert code == 0 and out.strip().splitlines()[-1] == "logistics"
