"""`tuneterm push` against a local stand-in of the Hub's HTTP API (tests/fake_hub, via HF_ENDPOINT):
the adapter's files and a generated model card (YAML header the Hub's own parser reads, eval results
with intervals) arrive in one commit; HF_TOKEN from the environment only; --dry-run uploads nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fake_hub import FakeHub
from fake_hub.server import VALID_TOKEN
from tuneterm.core.jobs.plan import plan_train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def lora_job(tiny_model_dir, tmp_path, tmp_workspace):
    """A real 2-step LoRA job on the tiny model, and an eval report in the workspace that scored it."""
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    lines = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()[:8]
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join(lines) + "\n")
    job = plan_train("lora", model=str(tiny_model_dir), data=str(data),
                     overrides=["train.max_steps=2", "train.batch_size=2", "lora.r=4"]).create()
    train.run(JobContext(job.dir))
    report = {"schema": "tuneterm.eval-report/1", "variants": [
        {"id": "base", "ref": str(tiny_model_dir)}, {"id": "tuned", "ref": f"job:{job.id}", "parent": "base"}],
        "tasks": {"tickets": {"source": "evals/tickets", "metrics": ["accuracy"], "variants": {
            "base": {"n": 40, "metrics": {"accuracy": {"value": 0.5, "ci95": [0.35, 0.65]}}},
            "tuned": {"n": 40, "metrics": {"accuracy": {"value": 0.8, "ci95": [0.66, 0.9]}}}}}}}
    (tmp_workspace.root / "evals" / "r1").mkdir(parents=True)
    (tmp_workspace.root / "evals" / "r1" / "report.json").write_text(json.dumps(report))
    return job


@pytest.fixture
def online(monkeypatch):
    """The test suite runs offline; a push is the one command that talks to a Hub (here the stand-in)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TUNETERM_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def test_push_uploads_the_adapter_and_its_card(cli, lora_job, online, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    code, out, err = cli("push", f"job:{lora_job.id}", "me/tiny-lora", "--private")
    assert code == 0, err
    assert "pushed job:" in out and "me/tiny-lora" in out
    repo = online.repos["me/tiny-lora"]
    assert repo["private"] and len(repo["commits"]) == 1
    adapter = lora_job.dir / "output" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tuneterm_config.toml",
            "tuneterm_metrics.json"} <= set(repo["files"])
    assert repo["files"]["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    assert "training_args.bin" not in repo["files"]

    card = ModelCard(repo["files"]["README.md"].decode())  # the Hub's own parser
    assert card.data.library_name == "peft"
    assert "tuneterm" in card.data.tags and "lora" in card.data.tags
    assert card.data.datasets == ["tickets"]
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("tickets", "accuracy"): 0.8}
    assert "[0.6600, 0.9000]" in card.text  # the interval, in the body's table
    assert hashlib.sha256(Path(_data_path(lora_job)).read_bytes()).hexdigest() in card.text  # data provenance
    assert all(auth == f"Bearer {VALID_TOKEN}" for _, _, auth in online.requests)
    paths = {p.split("?")[0] for _, p, _ in online.requests}
    assert paths == {"/api/repos/create", "/api/validate-yaml", "/api/models/me/tiny-lora/preupload/main",
                     "/api/models/me/tiny-lora/commit/main"}


def _data_path(job) -> str:
    import tomllib

    return tomllib.loads((job.dir / "spec.toml").read_text())["config"]["data"]


def test_dry_run_shows_files_and_card_and_needs_no_token(cli, lora_job, online, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, out, err = cli("push", f"job:{lora_job.id}", "me/tiny-lora", "--dry-run")
    assert code == 0, err
    assert "adapter_model.safetensors" in out and "README.md" in out
    assert "library_name: peft" in out and "model-index:" in out
    assert online.requests == []


def test_push_without_hf_token_fails_before_any_request(cli, lora_job, online, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # a saved login would not be used either
    code, _, err = cli("push", f"job:{lora_job.id}", "me/tiny-lora")
    assert code == 2 and "HF_TOKEN is not set" in err
    assert online.requests == []


def test_push_with_a_wrong_token_reports_the_hub_refusal(cli, lora_job, online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code, _, err = cli("push", f"job:{lora_job.id}", "me/tiny-lora")
    assert code != 0 and "the Hub refused the push" in err and "401" in err
    assert "me/tiny-lora" not in online.repos


def test_push_checks_the_repo_name(cli, lora_job):
    code, _, err = cli("push", f"job:{lora_job.id}", "not a repo", "--dry-run")
    assert code == 2 and "ORG/NAME" in err


def test_push_of_a_gguf_job_uploads_the_file_its_modelfile_and_a_gguf_card(cli, tmp_workspace, online, monkeypatch):
    """A quantize job's GGUF with the Modelfile `export --to ollama` wrote beside it, and the gate's report.
    (The file's bytes are a stand-in: push reads none of them; the stand-in Hub takes every file inline,
    where the real Hub sends large ones through LFS/Xet, which huggingface_hub handles.)"""
    from huggingface_hub import ModelCard

    from tuneterm.core.jobs import store

    train = store.create_job("train", {"method": "lora", "model": "smollm2-135m-instruct"})
    quant = store.create_job("quantize", {"model": f"job:{train.id}", "method": "gguf"})
    out = quant.dir / "output"
    gguf = out / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    (out / "Modelfile").write_text("FROM ./model-q8_0.gguf\nPARAMETER stop \"<|im_end|>\"\n")
    quality = {"passed": True, "ppl_increase": 0.0012, "mean_kl": 0.0004, "top1_agreement": 0.99}
    (out / "quality.json").write_text(json.dumps(quality))
    (out / "artifact.json").write_text(json.dumps({"kind": "gguf", "path": gguf.name, "job": quant.id,
                                                  "base": f"job:{train.id}", "gate_passed": True}))
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    code, out_text, err = cli("push", f"job:{quant.id}", "me/tiny-gguf")
    assert code == 0, err
    repo = online.repos["me/tiny-gguf"]
    assert not repo["private"]
    assert set(repo["files"]) == {"model-q8_0.gguf", "Modelfile", "README.md", "tuneterm_quality.json"}
    assert repo["files"]["model-q8_0.gguf"] == gguf.read_bytes()
    card = ModelCard(repo["files"]["README.md"].decode())
    assert card.data.library_name == "gguf" and {"gguf", "quantized"} <= set(card.data.tags)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert "Gate: **passed**" in card.text and "perplexity increase: 0.0012" in card.text
    assert f"tuneterm export job:{quant.id} --to ollama" in card.text
