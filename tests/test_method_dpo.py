"""DPO train jobs on the tiny model: the reward margin rises, the adapter reloads with plain PEFT,
a stop request checkpoints and `resume` finishes the curve, and a bad pair names file, line, field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tuneterm.core import jobs, modelref
from tuneterm.core.errors import DatasetError
from tuneterm.core.workspace import workspace
from tuneterm.workers.kinds import train
from tuneterm.workers.jobctx import JobContext
from stop_context import StopAtStep

REPO = Path(__file__).resolve().parents[1]


def _pairs(tmp_path, n=16) -> Path:
    lines = (REPO / "sample_data" / "preferences" / "train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(model: Path, data: Path, **train_opts) -> dict:
    config = tomllib.loads((REPO / "recipes" / "dpo.toml").read_text())
    assert config["method"] == "dpo"
    config.update(model=str(model), data=str(data))
    config["train"].update({"batch_size": 2, "lr": 5e-3, "max_length": 128, **train_opts})
    config["log"]["every_steps"] = 1
    config["lora"].update(r=8, alpha=16)
    return config


def _train_events(job) -> list[dict]:
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e.get("type") == "train"]


def test_dpo_job_raises_the_margin_and_saves_a_peft_adapter(tiny_model_dir, tmp_path):
    job = jobs.create_job("train", _config(tiny_model_dir, _pairs(tmp_path), max_steps=8))
    train.run(JobContext(job.dir))  # the train kind dispatches method "dpo" to workers/train/dpo.py

    events = _train_events(job)
    assert [e["step"] for e in events] == list(range(1, 9))
    for key in ("loss", "rewards_margins", "rewards_accuracies", "lr", "tokens_per_s"):
        assert events[-1][key] is not None, key
    first, late = events[0], events[-3:]
    assert sum(e["rewards_margins"] for e in late) / 3 > first["rewards_margins"] + 0.05
    assert sum(e["loss"] for e in late) / 3 < first["loss"]

    art = modelref.job_artifact(job.id, workspace().jobs_dir)
    assert art.kind == "adapter" and art.extra.get("method") == "dpo"
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and metrics["final_rewards_margins"] > 0
    assert tomllib.loads((job.dir / "output" / "config.toml").read_text())["dpo"]["beta"] == 0.1
    from huggingface_hub import ModelCard

    card = ModelCard((job.dir / "output" / "README.md").read_text())  # the Hub's conventions, the DPO summary kept
    assert "DPO" in card.text and card.data.library_name == "peft" and "dpo" in card.data.tags

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(base, art.path)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained, not the zero init


def test_dpo_full_trains_every_weight_and_saves_a_model(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, _pairs(tmp_path, 4), max_steps=2, lr=1e-3)
    config["dpo"]["tune"] = "full"
    job = jobs.create_job("train", config)
    trainer = train.run(JobContext(job.dir))
    assert trainer.ref_model is not None  # a frozen copy, not the policy itself
    art = modelref.job_artifact(job.id, workspace().jobs_dir)
    assert art.kind == "model"

    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(art.path)
    name = "model.layers.0.mlp.down_proj.weight"
    assert not base.get_parameter(name).equal(tuned.get_parameter(name))


def test_dpo_stop_checkpoints_and_resume_finishes(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, _pairs(tmp_path), max_steps=5)
    config["checkpoint"]["every_steps"] = 100
    job = jobs.create_job("train", config)
    train.run(StopAtStep(job.dir, at=2))
    stopped = [e["step"] for e in _train_events(job)]
    assert stopped and max(stopped) < 5
    ckpts = sorted((job.dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts and (ckpts[-1] / "tuneterm_config.json").is_file()
    assert not (job.dir / "output" / "artifact.json").exists()

    train.run(JobContext(job.dir, resume=True))
    steps = [e["step"] for e in _train_events(job)]
    assert sorted(set(steps)) == list(range(1, 6))
    assert steps[len(stopped):][0] == int(ckpts[-1].name.split("-")[1]) + 1  # continues, not restarts
    assert modelref.job_artifact(job.id, workspace().jobs_dir).kind == "adapter"


def test_dpo_pair_with_a_missing_field_names_file_line_and_field(tiny_model_dir, tmp_path):
    path = _pairs(tmp_path, 3)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    del rows[1]["non_preferred_output"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = jobs.create_job("train", _config(tiny_model_dir, path, max_steps=2))
    with pytest.raises(DatasetError) as info:
        train.run(JobContext(job.dir))
    text = info.value.render()
    assert "pairs.jsonl line 2" in text and "non_preferred_output" in text
    assert ("line", "2") in info.value.facts and ("field", "non_preferred_output") in info.value.facts
