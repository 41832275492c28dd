"""Quantize jobs on CPU with the tiny model: each method makes an artifact that `job:ID` loads and
generates from; the gate measures everything and fails a deliberately lossy quantization."""

from __future__ import annotations

import json

import pytest

from tuneterm.core import jobs
from tuneterm.workers.jobctx import JobContext

FAST_GATE = ["gate.max_texts=3", "gate.max_length=64", "gate.max_new_tokens=6",
             'gate.prompts=["What is the capital of France?", "Name two colours."]']

METRICS = ("ppl_increase", "mean_kl", "top1_agreement", "exact_match", "size_ratio", "memory_ratio", "speedup")
SIDE_FACTS = ("size_mb", "memory_mb", "load_s", "ttft_ms", "decode_tok_s", "ppl")


def run_job(model_ref: str, method: str, *overrides: str):
    """Create a real quantize job and run its kind in this process (what the child does)."""
    from tuneterm.workers.kinds import quantize
    from tuneterm.core.quantize_config import resolve

    config = resolve(str(model_ref), method, overrides=[*FAST_GATE, *overrides])
    info = jobs.create_job("quantize", config)
    ctx = JobContext(info.dir)
    quantize.run(ctx)
    return info


def generate(ref: str) -> tuple[object, str]:
    from tuneterm.workers.engine import GenerationParams, build_messages, generate_text
    from tuneterm.workers.loading import load

    loaded = load(ref)
    text, stats = generate_text(loaded.model, loaded.tokenizer, build_messages("Hello"),
                                GenerationParams(max_new_tokens=5))
    assert stats.completion_tokens >= 1
    return loaded, text


def events(info) -> list[dict]:
    return [json.loads(line) for line in (info.dir / "events.jsonl").read_text().splitlines()]


def test_int8_weight_only_makes_a_job_ref_that_loads_and_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.quantize.int8 import Int8WeightOnlyLinear

    info = run_job(tiny_model_dir, "int8-weight-only", "gate.enabled=false", "quant.keep_sensitive=2")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["kind"] == "quantized" and manifest["quant"]["method"] == "int8-weight-only"
    kept = [k["layer"] for k in manifest["quant"]["kept_sensitive"]]
    assert len(kept) == 2 and all(k["kl"] >= 0 for k in manifest["quant"]["kept_sensitive"])
    assert any(e.get("phase") == "sensitivity_done" for e in events(info))
    loaded, _ = generate(f"job:{info.id}")
    assert loaded.model._tuneterm_fast is not None  # job:ID decodes through the lean loop
    # fused per block: qkv, o, gate_up, down (q/k/v and gate/up are slices of the fused layers)
    quantized = [n for n, m in loaded.model.named_modules() if isinstance(m, Int8WeightOnlyLinear)]
    assert len(quantized) <= 2 * 4 + 1 and quantized
    for name in kept:  # the measured-sensitive layers stayed float
        assert type(loaded.model.get_submodule(name)).__name__ in ("Linear", "FusedPart")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
        got = loaded.model(ids).logits
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_int8_dynamic_job_is_gated_and_loads_as_job_ref(tiny_model_dir):
    from tuneterm.workers.quantize.int8 import Int8DynamicLinear, Int8Embedding

    method = "int8-dynamic"
    info = run_job(tiny_model_dir, method, "quant.quantize_embedding=true")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["kind"] == "quantized"
    assert manifest["quant"]["method"] == method and manifest["quant"]["bits"] == 8
    assert manifest["gate_passed"] is True
    assert manifest["quant"]["smoothed_groups"] == 2 * 3 + 1  # qkv, gate/up, down per block + the output layer

    loaded, _ = generate(f"job:{info.id}")
    layers = [m for m in loaded.model.modules() if isinstance(m, Int8DynamicLinear)]
    assert len(layers) == 2 * 4 + 1  # per block qkv, o, gate_up (fused for the lean loop), down; the output layer
    assert loaded.model._tuneterm_fast is not None
    assert isinstance(loaded.model.get_input_embeddings(), Int8Embedding)

    report = json.loads((info.dir / "output" / "quality.json").read_text())
    for key in METRICS:
        assert report[key] is not None, key
    for side in ("parent", "quantized"):
        for key in SIDE_FACTS:
            assert report[side][key] is not None, (side, key)
    assert report["quantized"]["size_mb"] < 0.6 * report["parent"]["size_mb"]
    assert report["quantized"]["memory_mb"] < 0.6 * report["parent"]["memory_mb"]
    assert 0.0 <= report["mean_kl"] < 0.01 and report["top1_agreement"] > 0.9
    assert abs(report["ppl_increase"]) < 0.01
    assert report["exact_match"] == 1.0
    assert "Gate: passed" in (info.dir / "output" / "quality.md").read_text()
    done = [e for e in events(info) if e.get("type") == "gate" and e.get("phase") == "done"]
    assert done and done[0]["passed"] is True and "top1_agreement" in done[0]


def test_a_lossy_quantization_fails_the_gate_and_makes_no_model_ref(tiny_model_dir):
    from tuneterm.core.errors import ModelNotFoundError
    from tuneterm.workers import loading
    from tuneterm.workers.quantize.gate import GateFailed

    with pytest.raises(GateFailed) as caught:
        run_job(tiny_model_dir, "int8-dynamic", "quant.bits=2", "gate.min_top1_agreement=0.9",
                "gate.max_mean_kl=0.01")
    assert any("top1_agreement" in value for _, value in caught.value.facts)
    info = jobs.list_jobs()[-1]
    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["passed"] is False and len(report["failures"]) == 2
    assert report["top1_agreement"] < 0.9 and report["mean_kl"] > 0.01
    assert "FAILED" in (info.dir / "output" / "quality.md").read_text()
    assert not (info.dir / "output" / "artifact.json").exists()
    with pytest.raises(ModelNotFoundError):
        loading.local_path(f"job:{info.id}")


def test_an_adapter_is_merged_into_its_base_before_quantizing(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    info = run_job(adapter_dir, "int8-dynamic")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["quant"]["merged_adapter_base"] == str(tiny_model_dir)
    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert "adapter merged" in report["parent"]["label"]
    assert report["top1_agreement"] > 0.9  # measured against base+adapter, not the bare base

    loaded, _ = generate(f"job:{info.id}")
    ids = torch.tensor([[1, 2, 3, 4]])
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        diff = (loaded.model(ids).logits - merged(ids).logits).abs().max().item()
        bare = (AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits - merged(ids).logits).abs().max().item()
    assert diff < bare  # the adapter's change survived quantization


@pytest.mark.parametrize("method", ["bnb-int8", "bnb-nf4", "bnb-fp4"])
def test_bitsandbytes_on_cpu_saves_and_reloads(tiny_model_dir, method):
    gate = [] if method == "bnb-nf4" else ["gate.enabled=false"]  # one method pays for the gate
    info = run_job(tiny_model_dir, method, "quant.device=cpu", "quant.double_quant=true", *gate)
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["quant"]["method"] == method and manifest["quant"]["device"] == "cpu"
    cfg = json.loads((info.dir / "output" / "model" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "bitsandbytes"
    loaded, _ = generate(f"job:{info.id}")
    import bitsandbytes as bnb

    kind = bnb.nn.Linear8bitLt if method == "bnb-int8" else bnb.nn.Linear4bit
    assert any(isinstance(m, kind) for m in loaded.model.modules())
    if not gate:
        report = json.loads((info.dir / "output" / "quality.json").read_text())
        assert report["top1_agreement"] > 0.8 and report["passed"]
    else:
        assert not (info.dir / "output" / "quality.json").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["bnb-int8", "bnb-nf4"])
def test_bitsandbytes_on_cuda(tiny_model_dir, method):
    info = run_job(tiny_model_dir, method, "quant.device=cuda", "quant.compute_dtype=bfloat16")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["quant"]["device"] == "cuda"
    loaded, _ = generate(f"job:{info.id}")
    assert loaded.model.device.type == "cuda"
