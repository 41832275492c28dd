"""The classification head (job kind ``cls_head``): the plan sizes ``train.max_length`` from the texts the
head reads (no label-listing system prompt), training on the tiny model lowers the loss, changes the
adapters and the head and leaves the backbone alone, the artifact reloads with plain PEFT and answers
``tuneterm chat`` and eval generate tasks with a label; one slow run on the embedded model."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tuneterm.core import jobs, modelref
from tuneterm.core.jobs.plan import plan_train
from tuneterm.core.workspace import workspace

from classifier_jobs import SYSTEM, WORDS, write_examples


def _write(path: Path, n: int, seed: int) -> Path:
    """An easy two-label set whose every row carries a long label-listing system prompt (~600+ tokens)."""
    return write_examples(path, n, seed, SYSTEM)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_plan_sizes_max_length_from_the_texts_not_the_system_prompt(tmp_path, tiny_model_dir, cli):
    data = _write(tmp_path / "train.jsonl", 12, 1)
    plan = plan_train("cls_head", model=str(tiny_model_dir), data=str(data))
    assert plan.kind == "cls_head"
    chosen = plan.config["train"]["max_length"]
    assert 16 <= chosen <= 32  # six words, not the ~700-token system prompt
    assert any("the longest text has" in n for n in plan.notes)
    code, out, err = cli("train", "--method", "cls_head", "--model", str(tiny_model_dir), "--data", str(data),
                         "--dry-run", "train.max_length=64")
    assert code == 0, err
    assert tomllib.loads(out)["train"]["max_length"] == 64  # the user's value stays
    one_label = tmp_path / "one.jsonl"
    one_label.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "x"}]}) + "\n")
    code, _, err = cli("train", "--method", "cls_head", "--model", str(tiny_model_dir), "--data", str(one_label))
    assert code != 0 and "at least two labels" in err
    code, _, err = cli("train", "--method", "cls_head", "--model", str(tiny_model_dir), "--data", str(data),
                       "head.tune=half")
    assert code != 0 and "head.tune must be one of lora, full" in err


def _run_head(model: Path, tmp_path: Path, overrides=(), n_train: int = 48) -> tuple:
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import cls_head

    folder = tmp_path / "easy"
    folder.mkdir(exist_ok=True)
    _write(folder / "train.jsonl", n_train, 1)
    _write(folder / "val.jsonl", 20, 2)
    plan = plan_train("cls_head", model=str(model), data=str(folder / "train.jsonl"),
                      overrides=["checkpoint.every_steps=1000", "log.every_steps=1", *overrides])
    job = plan.create()
    trainer = cls_head.run(JobContext(job.dir))
    return job, trainer


def _weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_lora_head_trains_reloads_with_peft_and_answers_chat_and_eval(tmp_path, tiny_model_dir, cli):
    import torch
    from peft import PeftModel

    from tuneterm.workers import classifier
    from tuneterm.workers.cls_head import load_head_model

    torch.manual_seed(0)
    base = load_head_model(tiny_model_dir, list(WORDS), 0)
    before = _weights(base)
    job, trainer = _run_head(tiny_model_dir, tmp_path, ["train.epochs=8", "train.lr=3e-3", "train.batch_size=8"])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(x == x for x in losses) and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    after = {n.replace("base_model.model.", ""): p for n, p in _weights(trainer.model).items()}
    frozen = [n for n in before if n in after and not n.startswith("score")]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)  # the backbone did not move
    assert any("lora_" in n and p.abs().sum() > 0 for n, p in after.items() if "lora_B" in n)
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    assert metrics["labels"] == sorted(WORDS) and metrics["val_accuracy"] >= 0.9

    art = modelref.job_artifact(job.id, workspace().jobs_dir)
    assert art.kind == "classifier" and art.extra["head"] == "cls_head" and art.base == str(tiny_model_dir)
    head = art.path
    plain = PeftModel.from_pretrained(load_head_model(tiny_model_dir, sorted(WORDS), 0), head)  # plain PEFT
    assert plain.base_model.model.config.num_labels == 2
    texts = ["refund invoice charge card billing refund", "parcel courier delivery shipment warehouse parcel"]
    assert classifier.predict(texts, f"job:{job.id}") == ["payments-ops", "logistics"]
    code, out, err = cli("chat", f"job:{job.id}", texts[1])
    assert code == 0 and out.strip().splitlines()[-1] == "logistics", err

    # eval: a generate task over label data; the head's answer is its label, scored like any output
    rows = [json.loads(line) for line in (tmp_path / "easy" / "val.jsonl").read_text().splitlines()]
    (tmp_path / "task.jsonl").write_text("".join(json.dumps({"id": f"r{i}", **r}) + "\n" for i, r in enumerate(rows)))
    (tmp_path / "task.yaml").write_text("name: route\nversion: 1\ntype: generate\ndata: {path: task.jsonl}\n"
                                        "generation: {max_new_tokens: 4}\nextract: [strip]\nmetrics: [exact_match]\n")
    code, out, err = cli("eval", str(tmp_path / "task.yaml"), "--models", f"{tiny_model_dir},job:{job.id}", "--json")
    assert code in (0, 1), err
    report = json.loads(out)
    scored = report["tasks"]["route"]["variants"][f"job:{job.id}"]
    assert scored["n"] == 20 and scored["metrics"]["exact_match"]["value"] >= 0.9
    assert [v["kind"] for v in report["variants"]] == ["model", "classifier"]
    card = ModelCard((job.dir / "output" / "README.md").read_text())  # the Hub's conventions, like every artifact
    assert card.data.library_name == "peft" and "cls_head" in card.data.tags and "2 labels" in card.text


def test_full_head_trains_every_weight(tmp_path, tiny_model_dir):
    job, trainer = _run_head(tiny_model_dir, tmp_path, ["head.tune=full", "train.max_steps=3", "train.lr=1e-3"], 16)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert len(trainable) == len(list(trainer.model.parameters()))
    head = modelref.job_artifact(job.id, workspace().jobs_dir).path
    assert (head / "model.safetensors").is_file() and not (head / "adapter_config.json").exists()
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(head).config.id2label == {0: "logistics",
                                                                                        1: "payments-ops"}
    from tuneterm.workers import classifier

    assert set(classifier.predict(["parcel courier"], str(head))) <= set(WORDS)
    card = ModelCard((job.dir / "output" / "README.md").read_text())
    assert card.data.library_name == "transformers" and card.data.datasets == ["train"]


@pytest.mark.slow
def test_head_on_the_embedded_model_learns_the_sample_tickets(tmp_path, embedded_model_dir, cli):
    from tuneterm.core import resources
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import cls_head

    tickets = resources.data_dir() / "sample_data" / "tickets"
    plan = plan_train("cls_head", model="smollm2-135m-instruct", data=str(tickets / "train.jsonl"),
                      val=str(tickets / "val.jsonl"),
                      overrides=["train.max_steps=30", "checkpoint.every_steps=1000", "lora.r=8"])
    assert plan.config["train"]["max_length"] < 128  # the texts only, not the system prompt
    job = plan.create()
    cls_head.run(JobContext(job.dir))
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    assert metrics["val_accuracy"] > metrics["chance"] + 0.2, metrics
    code, out, err = cli("chat", f"job:{job.id}", "I was charged twice for my subscription this month")
    assert code == 0 and out.strip().splitlines()[-1] in metrics["labels"], err
