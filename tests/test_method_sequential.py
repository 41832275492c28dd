"""Sequential fine-tuning on the tiny model: a two-stage pipeline (full, then LoRA) as one job;
stage 2 starts from stage 1's weights; the forgetting matrix; cancel in stage 2, then resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tuneterm.core import jobs

REPO = Path(__file__).resolve().parents[1]


def _subset(src: Path, dst: Path, n: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(src.read_text().splitlines()[:n]) + "\n")
    return dst


def _recipe(tmp_path: Path, stage2_method: str = "lora", stage2_data: Path | None = None) -> Path:
    """general (full) -> domain_qa (lora), on small copies of the sample data."""
    for name in ("general", "domain_qa"):
        _subset(REPO / "sample_data" / name / "train.jsonl", tmp_path / name / "train.jsonl", 16)
        _subset(REPO / "sample_data" / name / "val.jsonl", tmp_path / name / "val.jsonl", 4)
    data2 = stage2_data or tmp_path / "domain_qa"
    path = tmp_path / "pipeline.toml"
    path.write_text(f'''method = "sequential"

[eval]
batch_size = 4

[[stages]]
name = "general"
method = "full"
data = "{tmp_path / 'general'}"

[stages.train]
lr = 1e-3
batch_size = 4

[[stages]]
name = "domain_qa"
method = "{stage2_method}"
data = "{data2}"

[stages.train]
batch_size = 4
''')
    return path


def _job_id(out: str) -> str:
    return out.split("started job ", 1)[1].split(":", 1)[0]


def _events(job_id: str) -> list[dict]:
    return jobs.read_events(job_id)[0]


def _weight(folder: Path, key: str = "model.embed_tokens.weight"):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))[key]


def test_two_stage_pipeline_succeeds_with_forgetting_matrix(cli, tiny_model_dir, tmp_path):
    import torch

    code, out, err = cli("train", "--method", "sequential", "--model", str(tiny_model_dir),
                         "--recipe", str(_recipe(tmp_path)), "train.max_steps=3", "log.every_steps=1",
                         "stages.domain_qa.lora.r=4")
    assert code == 0, err
    assert "general (full, 16 examples) -> domain_qa (lora, 16 examples)" in out
    job_id = _job_id(out)
    info = jobs.wait_for(job_id, 240)
    assert info.state == "succeeded", jobs.tail_log(job_id, 60)
    assert info.model_ref == f"job:{job_id}"
    out_dir = info.dir / "output"
    artifact = json.loads((out_dir / "artifact.json").read_text())
    assert artifact["kind"] == "model" and artifact["stages"] == ["general", "domain_qa"]

    # stage 2 started from stage 1's weights: LoRA leaves the embeddings alone, full training moved them
    events = _events(job_id)
    begins = [e for e in events if e.get("type") == "stage_begin"]
    stage1 = out_dir / "stages" / "1-general" / "model"
    assert [b["stage"] for b in begins] == [1, 2] and begins[1]["start_model"] == str(stage1)
    base, first, final = (_weight(tiny_model_dir), _weight(stage1), _weight(out_dir / artifact["path"]))
    assert not torch.equal(base, first)
    assert torch.equal(first, final)
    # every training event carries its stage
    train = [e for e in events if e.get("type") == "train"]
    assert {(e["stage"], e["stage_name"]) for e in train} == {(1, "general"), (2, "domain_qa")}

    # the forgetting matrix: base on both sets, after stage 1 on general, after stage 2 on both
    state = json.loads((out_dir / "stages.json").read_text())
    loss = state["matrix"]["loss"]
    assert state["rows"] == ["base", "general", "domain_qa"] and state["val_sets"] == ["general", "domain_qa"]
    assert set(loss["base"]) == {"general", "domain_qa"} and set(loss["general"]) == {"general"}
    assert set(loss["domain_qa"]) == {"general", "domain_qa"}
    assert all(v > 0 for row in loss.values() for v in row.values())
    assert [s["state"] for s in state["stages"]] == ["succeeded", "succeeded"]
    assert state["forgetting"]["general"] == pytest.approx(loss["domain_qa"]["general"] - loss["general"]["general"],
                                                           abs=1e-4)
    evals = [e for e in events if e.get("type") == "stage_eval"]
    assert {(e["stage_name"], e["val_set"]) for e in evals} == {
        ("base", "general"), ("base", "domain_qa"), ("general", "general"),
        ("domain_qa", "general"), ("domain_qa", "domain_qa")}
    from huggingface_hub import ModelCard

    card = ModelCard((out_dir / "README.md").read_text())  # the Hub's conventions, the forgetting matrix kept
    assert "after \\ val" in card.text and card.data.library_name == "transformers" and "sequential" in card.data.tags


def test_cancel_in_stage_two_then_resume_skips_stage_one(cli, tiny_model_dir, tmp_path):
    code, out, err = cli("train", "--method", "sequential", "--model", str(tiny_model_dir),
                         "--recipe", str(_recipe(tmp_path)), "train.max_steps=3", "log.every_steps=1",
                         "stages.2.train.max_steps=40", "stages.2.train.batch_size=2", "stages.2.lora.r=4",
                         "stages.2.checkpoint.every_steps=100", "eval.base=false")
    assert code == 0, err
    job_id = _job_id(out)
    deadline = time.monotonic() + 180
    while not any(e.get("type") == "train" and e.get("stage") == 2 for e in _events(job_id)):
        assert time.monotonic() < deadline, jobs.tail_log(job_id, 40)
        assert jobs.get_job(job_id).state in jobs.ACTIVE, jobs.tail_log(job_id, 40)
        time.sleep(0.1)
    assert cli("jobs", "cancel", job_id)[0] == 0
    info = jobs.wait_for(job_id, 120)
    assert info.state == "cancelled", jobs.tail_log(job_id, 40)
    state = json.loads((info.dir / "output" / "stages.json").read_text())
    assert [s["state"] for s in state["stages"]] == ["succeeded", "cancelled"]
    stopped = max(e["step"] for e in _events(job_id) if e.get("type") == "train" and e.get("stage") == 2)
    assert stopped < 40
    assert list((info.dir / "checkpoints" / "2-domain_qa").glob("checkpoint-*"))
    n_before = len(_events(job_id))

    assert cli("jobs", "resume", job_id)[0] == 0
    info = jobs.wait_for(job_id, 240)
    assert info.state == "succeeded", jobs.tail_log(job_id, 60)
    after = _events(job_id)[n_before:]
    assert not [e for e in after if e.get("stage") == 1 and e.get("type") != "stage_skip"]
    assert [e["stage"] for e in after if e.get("type") == "stage_skip"] == [1]
    begin = [e for e in after if e.get("type") == "stage_begin"]
    assert [b["stage"] for b in begin] == [2] and begin[0]["resume"] is True
    steps = sorted({e["step"] for e in _events(job_id) if e.get("type") == "train" and e.get("stage") == 2})
    assert steps == list(range(1, 41))
    assert min(e["step"] for e in after if e.get("type") == "train") > 1  # continued, not restarted
    state = json.loads((info.dir / "output" / "stages.json").read_text())
    assert state["rows"] == ["general", "domain_qa"]
    assert info.model_ref == f"job:{job_id}"


def test_dpo_stage_runs_through_the_train_entry_point(cli, tiny_model_dir, tmp_path):
    prefs = _subset(REPO / "sample_data" / "preferences" / "train.jsonl", tmp_path / "prefs" / "train.jsonl", 8)
    code, out, err = cli("train", "--method", "sequential", "--model", str(tiny_model_dir),
                         "--recipe", str(_recipe(tmp_path, "dpo", prefs)), "train.max_steps=2",
                         "eval.base=false")
    assert code == 0, err
    job_id = _job_id(out)
    info = jobs.wait_for(job_id, 240)
    assert info.state == "succeeded", jobs.tail_log(job_id, 60)
    assert info.model_ref == f"job:{job_id}"
    begins = [e for e in _events(job_id) if e.get("type") == "stage_begin"]
    assert [(b["stage"], b["method"]) for b in begins] == [(1, "full"), (2, "dpo")]
