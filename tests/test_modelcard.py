"""Model cards: the Hub's metadata conventions (read back with huggingface_hub's own ModelCard parser),
the base's licence from its own card, data hashes, eval results with intervals, and the kind's summary
kept when the card is regenerated."""

from __future__ import annotations

import hashlib
import json

from huggingface_hub import ModelCard

from tuneterm.core import modelcard
from tuneterm.core.jobs import store


def _job(config: dict, artifact: dict, metrics: dict | None = None, kind: str = "train"):
    job = store.create_job(kind, config)
    (job.dir / "output" / "artifact.json").write_text(json.dumps(artifact))
    if metrics:
        (job.dir / "output" / "metrics.json").write_text(json.dumps(metrics))
    return job


def test_card_of_an_adapter_on_the_embedded_model(tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n' * 3)
    job = _job({"method": "lora", "model": "smollm2-135m-instruct", "data": str(data), "dataset": "tickets",
                "lora": {"r": 8}}, {"kind": "adapter", "path": "adapter"}, {"eval_loss": 1.25, "final_loss": 1.1})
    text = modelcard.render(job.dir, details="- DPO-free summary line\n")
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.license == "apache-2.0" and card.data.library_name == "peft"
    assert card.data.datasets == ["tickets"]
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("loss", 1.25)]
    assert hashlib.sha256(data.read_bytes()).hexdigest() in text and "| train |" in text and "| 3 |" in text
    assert "r = 8" in text  # the frozen recipe
    assert "licensed apache-2.0" in text
    (job.dir / "output" / "README.md").write_text(text)
    assert "- DPO-free summary line" in modelcard.render(job.dir)  # regenerating keeps the kind's summary


def test_card_of_a_gguf_from_a_job_reads_the_licence_of_a_local_base(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a base\n")
    data = tmp_path / "tickets.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n' * 2)
    train = _job({"method": "full", "model": str(base), "data": str(data), "dataset": "tickets",
                  "train": {"lr": 3e-5}}, {"kind": "model", "path": "model"})
    quant = _job({"model": f"job:{train.id}", "method": "gguf"},
                 {"kind": "gguf", "path": "model-q8_0.gguf", "gate_passed": True,
                  "quality": {"ppl_increase": 0.012, "mean_kl": 0.003}}, kind="quantize")
    card = ModelCard(modelcard.render(quant.dir, repo_id="me/tiny-gguf"))
    assert card.data.library_name == "gguf" and card.data.license == "mit"
    assert "gguf" in card.data.tags and "quantized" in card.data.tags
    assert card.data.base_model is None  # a local folder has no Hub id
    assert "## Quantization gate" in card.text and "perplexity increase: 0.012" in card.text
    assert f"`job:{train.id}` → `{base}`" in card.text and "# me/tiny-gguf" in card.text
    # the data and recipe of the training job it was quantized from: provenance travels with the GGUF (pushed alone)
    assert card.data.datasets == ["tickets"]
    assert hashlib.sha256(data.read_bytes()).hexdigest() in card.text
    assert f"`job:{train.id}` was trained on" in card.text
    assert f"Trained before that by `job:{train.id}` with **full**" in card.text and "lr = 3e-05" in card.text
