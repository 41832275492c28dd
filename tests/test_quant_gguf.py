"""GGUF export: the file reads back with the right tensors and metadata, loads as job:ID, and
(where llama-cpp-python is installed) llama.cpp generates from it."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.test_quant_cpu import generate, run_job


def expected_tensors(n_layers: int) -> set[str]:
    names = {"token_embd.weight", "output_norm.weight"}
    for i in range(n_layers):
        names |= {f"blk.{i}.{p}.weight" for p in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                   "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    return names


def test_f16_export_reads_back_with_the_right_tensors(tiny_model_dir, tmp_path):
    outtype, matrix_type = "f16", "F16"  # q8_0 is read back by the job below
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    facts = gguf_export.export(model, tokenizer, tmp_path / "m.gguf", outtype)
    back = gguf_export.read_back(tmp_path / "m.gguf")
    assert facts["tensors"] == len(back["tensors"]) == 2 + 9 * 2
    assert set(back["tensors"]) == expected_tensors(2)  # tied embeddings: no output.weight
    assert back["tensors"]["token_embd.weight"] == ([64, len(tokenizer)], matrix_type)
    assert back["tensors"]["blk.1.attn_k.weight"] == ([64, 32], matrix_type)  # 2 kv heads x 16
    assert back["tensors"]["blk.0.ffn_down.weight"] == ([128, 64], matrix_type)
    assert back["tensors"]["blk.0.attn_norm.weight"] == ([64], "F32")
    assert back["architecture"] == "llama" and back["block_count"] == 2
    assert back["vocab_size"] == len(tokenizer)
    assert back["chat_template"] == tokenizer.chat_template
    assert back["tokenizer_pre"] == "smollm"


def test_gguf_job_is_gated_and_loads_as_job_ref(tiny_model_dir):
    info = run_job(tiny_model_dir, "gguf", "quant.outtype=q8_0")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["kind"] == "gguf"
    assert manifest["quant"]["file"] == "model-q8_0.gguf" and manifest["quant"]["gguf_types"] == ["F32", "Q8_0"]
    assert (info.dir / "output" / "model" / "model-q8_0.gguf").is_file()
    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["passed"] and report["top1_agreement"] > 0.95 and report["mean_kl"] < 1e-3
    assert report["quantized"]["size_mb"] < 0.5 * report["parent"]["size_mb"]
    from tuneterm.workers.quantize import gguf as gguf_export

    back = gguf_export.read_back(info.dir / "output" / "model" / "model-q8_0.gguf")
    assert back["tensors"]["blk.0.attn_q.weight"] == ([64, 64], "Q8_0")
    assert back["tensors"]["blk.0.ffn_norm.weight"] == ([64], "F32")
    generate(f"job:{info.id}")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_generates_from_the_export(embedded_model_dir, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    gguf_export.export(model, tokenizer, tmp_path / "m.gguf", "q8_0")
    llm = Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=256, verbose=False)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                     max_tokens=16, temperature=0)
    assert "Paris" in out["choices"][0]["message"]["content"]
