"""Training methods on the tiny Llama, in-process through the real worker (tuneterm.workers.kinds.train.run):
loss finite and falling, exactly the intended weights change, artifacts reload with plain libraries,
and an interrupted + resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tuneterm.core import jobs, recipes
from tuneterm.workers.jobctx import JobContext

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tickets(tmp_path) -> Path:
    lines = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()[:24]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class StopAt(JobContext):
    """A context that asks to stop (as SIGTERM would) once step ``stop_at`` has been logged."""

    stop_at = None

    def event(self, **fields):
        super().event(**fields)
        if self.stop_at and fields.get("type") == "train" and fields.get("step", 0) >= self.stop_at:
            self._stop.set()


def train(model_dir, data, method, *overrides, resume_job=None, stop_at=None):
    if resume_job is None:
        config = recipes.resolve(method, overrides=["log.every_steps=1", "checkpoint.every_steps=100", *overrides])
        config.update(model=str(model_dir), data=str(data))
        job = jobs.create_job("train", config)
    else:
        job = resume_job
    ctx = StopAt(job.dir, resume=resume_job is not None)
    ctx.stop_at = stop_at
    trainer = __import__("tuneterm.workers.kinds.train", fromlist=["run"]).run(ctx)
    return job, trainer


def _losses(job):
    events, _ = jobs.read_events(job.id)
    return [e["loss"] for e in events if e.get("type") == "train"]


def _base_state(model_dir):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items()}


def test_lora_trains_adapters_only_and_reloads_with_plain_peft(tiny_model_dir, tickets):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job, trainer = train(tiny_model_dir, tickets, "lora", "train.max_steps=8", "train.batch_size=4",
                         "train.lr=5e-3", "lora.r=4", "lora.alpha=8")
    losses = _losses(job)
    assert len(losses) == 8 and all(map(lambda x: x == x and abs(x) < 1e4, losses))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    model = trainer.model
    base = _base_state(tiny_model_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, now trained
    for name, value in model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(value, base[key]), name  # frozen base: bit-identical

    out = job.dir / "output"
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["kind"] == "adapter" and manifest["base"] == str(tiny_model_dir)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "metrics.json").is_file()
    assert "lora" in (out / "README.md").read_text() and (out / "config.toml").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)
    # job:ID is a model reference
    from tuneterm.workers.loading import load

    loaded = load(f"job:{job.id}")
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, model(ids).logits, atol=1e-5)


def test_freeze_trains_only_the_selected_blocks(tiny_model_dir, tickets):
    job, trainer = train(tiny_model_dir, tickets, "freeze", "train.max_steps=4", "train.batch_size=4",
                         "train.lr=1e-3", "freeze.last_n_blocks=1", "freeze.modules=model.norm")
    base = _base_state(tiny_model_dir)
    after = trainer.model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") or k == "model.norm.weight" for k in changed)
    assert "model.norm.weight" in changed
    for k in base:
        if k.startswith(("model.layers.0.", "model.embed_tokens", "lm_head")):
            assert torch.equal(base[k], after[k]), k
    manifest = json.loads((job.dir / "output" / "artifact.json").read_text())
    assert manifest["kind"] == "model"


def test_full_trains_every_weight_and_the_loss_falls(tiny_model_dir, tickets):
    job, trainer = train(tiny_model_dir, tickets, "full", "train.max_steps=6", "train.batch_size=4",
                         "train.lr=2e-3", "train.warmup_ratio=0")
    losses = _losses(job)
    assert losses[-1] < losses[0]
    base = _base_state(tiny_model_dir)
    after = trainer.model.state_dict()
    assert all(not torch.equal(base[k], after[k]) for k in base if k.endswith("weight"))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(job.dir / "output" / "model")  # reloads with plain transformers


def test_qlora_on_cpu_trains_a_4bit_base(tiny_model_dir, tickets):
    job, trainer = train(tiny_model_dir, tickets, "qlora", "train.max_steps=3", "train.batch_size=4",
                         "train.lr=5e-3", "lora.r=4")
    kinds = {type(m).__name__ for m in trainer.model.modules()}
    assert "Linear4bit" in kinds
    assert all(x == x for x in _losses(job)) and len(_losses(job)) == 3
    assert json.loads((job.dir / "output" / "artifact.json").read_text())["kind"] == "adapter"


def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tiny_model_dir, tickets):
    args = ("train.max_steps=8", "train.batch_size=4", "train.epochs=2", "train.lr=5e-3", "lora.r=4",
            "lora.dropout=0.1")
    whole, whole_trainer = train(tiny_model_dir, tickets, "lora", *args)
    part, part_trainer = train(tiny_model_dir, tickets, "lora", *args, stop_at=3)
    assert part_trainer.state.global_step < 8
    checkpoints = sorted((part.dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a stop request saves a checkpoint"
    frozen = json.loads((checkpoints[-1] / "tuneterm_config.json").read_text())
    assert frozen["lora"]["r"] == 4  # the resolved config lives in every checkpoint
    assert not (part.dir / "output" / "artifact.json").exists()
    _, resumed_trainer = train(tiny_model_dir, tickets, "lora", resume_job=part)
    assert resumed_trainer.state.global_step == 8
    whole_losses, part_losses = _losses(whole), _losses(part)
    steps = [e["step"] for e in jobs.read_events(part.id)[0] if e.get("type") == "train"]
    assert sorted(set(steps)) == list(range(1, 9))  # the curve continues: no step missing
    assert part_losses[-1] == pytest.approx(whole_losses[-1], rel=1e-4, abs=1e-5)
    a = {n: p for n, p in whole_trainer.model.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed_trainer.model.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


@pytest.mark.gpu
def test_qlora_on_cuda_with_bf16_compute(tiny_model_dir, tickets):
    job, trainer = train(tiny_model_dir, tickets, "qlora", "train.max_steps=3", "train.batch_size=4",
                         "train.lr=5e-3", "lora.r=4", "quant.compute_dtype=bfloat16")
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert all(x == x for x in _losses(job))
    assert json.loads((job.dir / "output" / "artifact.json").read_text())["kind"] == "adapter"


def test_packed_batches_train_exactly_like_padded_ones(tiny_model_dir, tickets):
    """Through the real worker: padding-free packing (shared prefix computed once) and padded batches give
    the same losses step by step (with gradient accumulation) and the same validation loss."""
    results = []
    for packing in ("true", "false"):
        config = recipes.resolve("lora", overrides=[
            "log.every_steps=1", "checkpoint.every_steps=100", "train.max_steps=3", "train.batch_size=4",
            "train.grad_accum=2", "train.lr=5e-3", "lora.r=4", "lora.dropout=0", f"train.packing={packing}"])
        config.update(model=str(tiny_model_dir), data=str(tickets), eval_data=str(tickets))
        job = jobs.create_job("train", config)
        trainer = __import__("tuneterm.workers.kinds.train", fromlist=["run"]).run(JobContext(job.dir))
        metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
        results.append((_losses(job), metrics["eval_loss"], trainer.tokens_seen))
    (packed, packed_eval, packed_tokens), (padded, padded_eval, padded_tokens) = results
    assert len(packed) == 3 and packed == pytest.approx(padded, rel=1e-4)
    assert packed_eval == pytest.approx(padded_eval, rel=1e-4)
    assert packed_tokens == padded_tokens  # tokens/s counts the examples' tokens either way
