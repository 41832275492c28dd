"""The gate's tokenizer check: the artifact's tokenizer (for GGUF, read back from the file) must
encode sample texts, carry the special ids and render the chat template as the source does."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tuneterm.workers.quantize import tokcheck


def test_a_tokenizer_with_another_end_of_turn_token_fails(tiny_arch):
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(tiny_arch("qwen2"))
    assert tokcheck.compare(source, AutoTokenizer.from_pretrained(tiny_arch("qwen2"))) == []
    other = AutoTokenizer.from_pretrained(tiny_arch("qwen2"))
    other.eos_token = "<|endoftext|>"
    failures = tokcheck.compare(source, other)
    assert any("eos token id" in f for f in failures)
    other = AutoTokenizer.from_pretrained(tiny_arch("qwen2"))
    other.chat_template = other.chat_template + "{{ '!' }}"
    assert tokcheck.compare(source, other) == ["tokenizer: the chat template renders a different prompt in the artifact"]


@pytest.mark.parametrize("arch", ["gemma2", "llama3"])
def test_gguf_tokenizer_is_read_back_from_the_file(tiny_arch, arch, tmp_path):
    if arch == "llama3":
        pytest.importorskip("llama_models")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export

    path = tiny_arch(arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    gguf_export.export(model, tokenizer, tmp_path / "ok.gguf", "f16")
    assert tokcheck.compare_gguf(tokenizer, tmp_path / "ok.gguf") == []
    tokenizer_b = AutoTokenizer.from_pretrained(path)
    tokenizer_b.chat_template = "{{ messages[0]['content'] }}"
    gguf_export.export(model, tokenizer_b, tmp_path / "tpl.gguf", "f16")
    assert "chat template" in " ".join(tokcheck.compare_gguf(tokenizer, tmp_path / "tpl.gguf"))
    if arch == "llama3" and importlib.util.find_spec("llama_cpp") is not None:
        # the wrong pre-tokenizer (gpt-2 keeps digit runs whole; Llama 3 splits them in threes)
        gguf_export.export(model, tokenizer, tmp_path / "pre.gguf", "f16", tokenizer_pre="gpt-2")
        failures = tokcheck.compare_gguf(tokenizer, tmp_path / "pre.gguf")
        assert failures and "encodes to" in failures[0] and "Numbers 1234567" in failures[0]
