"""Every fixture architecture through every step (issue 13): chat with a system prompt, training
(lora, freeze, full), serving base + adapter, eval (generate, choice, perplexity) on base, tuned and
quantized variants, int8-dynamic quantization and its reload, and the GGUF job."""

from __future__ import annotations

import json

import pytest
import torch
from test_eval_runner import tasks  # noqa: F401 - the generate/choice/perplexity task fixture
from test_quant_cpu import generate, run_job
from test_train_methods import _base_state, _losses, tickets, train  # noqa: F401 - tickets is a fixture
from tiny_archs import ARCHS

SYSTEM_CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hello there"}]


def _say(loaded, messages, n=6):
    from tuneterm.workers.engine import GenerationParams, generate_text

    text, stats = generate_text(loaded.model, loaded.tokenizer, messages, GenerationParams(max_new_tokens=n))
    assert stats.completion_tokens >= 1
    return text


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_chat_lora_serve_and_eval(tiny_arch, arch, tickets, tasks):  # noqa: F811
    """Chat takes a system prompt on every template (Gemma's folds it); a LoRA job trains on the
    all-linear layers (Phi-3's fused ones too); the server decodes base and adapter together exactly
    as each alone; eval scores base and tuned on all three task types."""
    from openai import OpenAI

    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, collect
    from tuneterm.workers.loading import load
    from tuneterm.workers.server import make_server, serve_in_thread

    path = tiny_arch(arch)
    base = load(str(path))
    alone_base = _say(base, SYSTEM_CHAT)
    job, _ = train(path, tickets, "lora", "train.max_steps=2", "train.batch_size=4", "train.lr=5e-2",
                   "train.max_length=128")
    losses = _losses(job)
    assert len(losses) == 2 and all(x == x for x in losses)
    tuned = load(f"job:{job.id}")
    alone_tuned = _say(tuned, SYSTEM_CHAT)

    srv = make_server([str(path), f"job:{job.id}"], port=0)
    serve_in_thread(srv)
    try:
        client = OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)
        base_id, tuned_id = list(srv.variants)
        answers = {m: client.chat.completions.create(model=m, messages=SYSTEM_CHAT, max_tokens=6, temperature=0)
                   .choices[0].message.content for m in (base_id, tuned_id)}
    finally:
        srv.shutdown()
        srv.server_close()
    assert answers[base_id] == alone_base and answers[tuned_id] == alone_tuned

    runs, _ = collect(tasks, parse_variants([str(path), f"job:{job.id}"]), RunOptions(progress=False))
    for name in ("gen", "mc", "ppl"):
        for ref in (str(path), f"job:{job.id}"):
            records = runs[name][ref].records
            assert records and not any(r.get("error") for r in records), (name, ref)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_full_and_qlora_train(tiny_arch, arch, tickets):  # noqa: F811
    path = tiny_arch(arch)
    base = _base_state(path)
    _, trainer = train(path, tickets, "freeze", "train.max_steps=1", "train.batch_size=4", "train.lr=1e-2",
                       "train.max_length=128", "freeze.last_n_blocks=1")
    after = trainer.model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    job, trainer = train(path, tickets, "full", "train.max_steps=1", "train.batch_size=4", "train.lr=1e-2",
                         "train.max_length=128", "train.warmup_ratio=0")
    after = trainer.model.state_dict()
    assert sum(not torch.equal(base[k], after[k]) for k in base) > len(base) // 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(job.dir / "output" / "model")
    job, trainer = train(path, tickets, "qlora", "train.max_steps=1", "train.batch_size=4", "train.lr=1e-2",
                         "train.max_length=128", "lora.r=4")
    assert "Linear4bit" in {type(m).__name__ for m in trainer.model.modules()}
    assert all(x == x for x in _losses(job))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_quantize_jobs_make_artifacts_that_reload(tiny_arch, arch):
    """int8-weight-only and bnb-nf4 make artifacts that load and generate. Smoothing folds into each norm layout (Gemma's (1 + w), Phi-3's fused projections), so the gate's
    KL and top-1 figures hold; the artifact reloads (Gemma's scaled embedding) and generates. The GGUF
    job writes the architecture's own layout and passes the gate."""
    for method, extra in (("int8-weight-only", ["gate.enabled=false"]), ("bnb-nf4", ["gate.enabled=false"])):
        info = run_job(tiny_arch(arch), method, *extra)
        loaded, _ = generate(f"job:{info.id}")
        assert loaded.model.config.model_type.startswith(arch[:5])
    for method, extra in (("int8-dynamic", []), ("gguf", ["quant.outtype=f16"])):
        info = run_job(tiny_arch(arch), method, *extra)
        manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
        assert manifest["quant"]["method"] == method and manifest["gate_passed"] is True, method
        report = json.loads((info.dir / "output" / "quality.json").read_text())
        assert report["top1_agreement"] > 0.9 and report["mean_kl"] < 0.01, method
        assert report["tokenizer_check"] == {"passed": True, "failures": []}, method
        if method == "int8-dynamic":
            assert manifest["quant"]["smoothed_groups"] == 2 * 3 + 1
        loaded, _ = generate(f"job:{info.id}")
        assert loaded.model.config.model_type.startswith(arch[:5])
