"""GGUF export of every fixture architecture: the gguf package's own tensor names and keys for the
architecture, a lossless f32 round trip through tuneterm's reader, and (when llama-cpp-python is
installed) llama.cpp computing the same logits and token ids as transformers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from tiny_archs import ARCHS

EXPECTED_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
                 "gemma3": "gemma3", "phi3": "phi3"}


def _export(tiny_arch, arch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export

    path = tiny_arch(arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    gguf_export.export(model, tokenizer, tmp_path / "m.gguf", "f32")
    model.config.save_pretrained(tmp_path)
    return model, tokenizer


@pytest.mark.parametrize("arch", ARCHS)
def test_export_uses_the_architectures_names_and_round_trips(tiny_arch, arch, tmp_path):
    import gguf

    from tuneterm.workers.quantize import gguf as gguf_export

    model, _ = _export(tiny_arch, arch, tmp_path)
    back = gguf_export.read_back(tmp_path / "m.gguf")
    assert back["architecture"] == EXPECTED_ARCH[arch] and back["block_count"] == 2
    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == back["architecture"])
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) + s for t in gguf.MODEL_TENSORS[kind] for b in range(2)
               for s in (".weight", ".bias")}
    assert set(back["tensors"]) <= allowed  # only names the format defines for this architecture
    assert set(back["tensors"]) == gguf_export.expected_tensors(model)
    again = gguf_export.load_model(tmp_path, "m.gguf")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("arch", ARCHS)
def test_llama_cpp_computes_what_transformers_computes(tiny_arch, arch, tmp_path):
    from llama_cpp import Llama

    model, tokenizer = _export(tiny_arch, arch, tmp_path)
    llm = Llama(str(tmp_path / "m.gguf"), n_ctx=128, logits_all=True, verbose=False, n_threads=1)
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    llm.eval(ids)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    got = np.array(llm.scores[: len(ids)])
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()
    text = "Hello world, how are you? 12345 <|im_end|>"
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text, add_special_tokens=False)["input_ids"]
    llm.close()


def test_llama3_vocabulary_gets_its_own_pre_tokenizer_and_special_ids(tiny_arch, tmp_path):
    """The real Llama 3 tokenizer (llama-models): pre-tokenizer ``llama-bpe`` (not gpt2), its BOS/EOS/pad
    ids and all 128,256 tokens in the file; llama.cpp (when installed) encodes text as transformers does."""
    pytest.importorskip("llama_models")
    import gguf

    from tuneterm.workers.quantize import gguf as gguf_export

    model, tokenizer = _export(tiny_arch, "llama3", tmp_path)
    back = gguf_export.read_back(tmp_path / "m.gguf")
    assert back["tokenizer_pre"] == "llama-bpe" and back["vocab_size"] == 128256
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    ids = {k: reader.fields[f"tokenizer.ggml.{k}_token_id"].contents() for k in ("bos", "eos", "padding")}
    assert ids == {"bos": 128000, "eos": 128009, "padding": 128004}
    if importlib.util.find_spec("llama_cpp") is None:
        return
    from llama_cpp import Llama

    llm = Llama(str(tmp_path / "m.gguf"), n_ctx=64, verbose=False, n_threads=1, vocab_only=True)
    for text in ("Hello world, how are you? 12345", "naïve café 😀  spaces\n\nnew lines", "<|eot_id|>x"):
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == \
            tokenizer(text, add_special_tokens=False)["input_ids"], text
    llm.close()


def test_a_sentencepiece_style_tokenizer_is_refused_before_anything_is_written(tiny_arch, tmp_path):
    """Llama 2 / Mistral vocabularies (BPE with byte fallback and ▁ for spaces) are not written as gpt2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from tuneterm.core.errors import InputError
    from tuneterm.workers.quantize import gguf as gguf_export

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a")], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    model = AutoModelForCausalLM.from_pretrained(tiny_arch("mistral"))
    with pytest.raises(InputError, match="SentencePiece-style"):
        gguf_export.export(model, tokenizer, tmp_path / "m.gguf", "f16")
    assert not list(tmp_path.iterdir())
