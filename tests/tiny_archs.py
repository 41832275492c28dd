"""Tiny random-weight checkpoints of the architectures users bring, for tests.

``tiny_model(arch) -> Path`` builds (once, cached on disk by a key of everything that shapes it) a
2-layer, hidden-64 checkpoint of ``arch`` with the embedded SmolLM2 tokenizer, the family's
end-of-turn tokens added as special tokens, and the family's real chat template from the installed
TRL package (``trl/chat_templates``); Mistral keeps the embedded template (TRL ships none).

    llama    LlamaForCausalLM, Llama 3.1 template, <|eot_id|>
    mistral  MistralForCausalLM (no sliding window, as Mistral v0.3)
    qwen2    Qwen2ForCausalLM (q/k/v bias), Qwen2.5 template
    qwen3    Qwen3ForCausalLM (q/k norms), Qwen3 template (thinking tags)
    gemma2   Gemma2ForCausalLM: sliding window 64 on every other layer, soft caps, Gemma template (no system role)
    gemma3   Gemma3ForCausalLM (text): window 64 on layer 0, Gemma 3 template
    phi3     Phi3ForCausalLM (fused qkv_proj / gate_up_proj), Phi-3 template

Not in ``ARCHS`` (a real vocabulary, for tokenizer checks):

    llama3   LlamaForCausalLM with the real Llama 3 tokenizer (``llama-models``' tiktoken ranks, 128,256
             tokens), Llama 3.1 template
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
WINDOW = 64  # the sliding window of the Gemma fixtures
_VERSION = 1  # bump when the build below changes

# (template file in trl/chat_templates or None, special tokens added, end-of-turn/eos token)
_FAMILY = {
    "llama": ("llama3_1.jinja", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
              "<|eot_id|>"),
    "mistral": (None, [], None),
    "qwen2": ("qwen2_5.jinja", [], "<|im_end|>"),
    "qwen3": ("qwen3.jinja", ["<think>", "</think>"], "<|im_end|>"),
    "gemma2": ("gemma.jinja", ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "gemma3": ("gemma3.jinja", ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    # <s>, </s>, <unk>: Phi-3's (Llama) vocabulary has them, and llama.cpp looks them up for models named phi3
    "phi3": ("phi3.jinja", ["<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|end|>"),
    "llama3": ("llama3_1.jinja", [], "<|eot_id|>"),
}
_BOS = {"llama": "<|begin_of_text|>", "gemma2": "<bos>", "gemma3": "<bos>"}


def cache_root() -> Path:
    default = Path(__file__).resolve().parents[1] / ".tuneterm-test-cache" / "models"
    return Path(os.environ.get("TUNETERM_TEST_MODELS", default))


def template_text(arch: str) -> str | None:
    import importlib.util

    name = _FAMILY[arch][0]
    if name is None:
        return None
    folder = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
    return (folder / name).read_text()


def _config(arch: str, vocab: int, bos: int, eos: int, pad: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch in ("llama", "llama3"):
        return tf.LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None, tie_word_embeddings=False)
    if arch == "qwen2":
        return tf.Qwen2Config(**common, use_sliding_window=False, tie_word_embeddings=True)
    if arch == "qwen3":
        return tf.Qwen3Config(**common, head_dim=16, use_sliding_window=False, tie_word_embeddings=True)
    if arch == "gemma2":
        return tf.Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
                               layer_types=["sliding_attention", "full_attention"],
                               attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
                                   layer_types=["sliding_attention", "full_attention"])
    if arch == "phi3":
        return tf.Phi3Config(**common, sliding_window=None, tie_word_embeddings=False)
    raise KeyError(f"unknown fixture architecture {arch!r}; known: {', '.join(ARCHS)}")


def _model_class(arch: str):
    import transformers as tf

    return {"llama": tf.LlamaForCausalLM, "llama3": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM, "qwen2": tf.Qwen2ForCausalLM,
            "qwen3": tf.Qwen3ForCausalLM, "gemma2": tf.Gemma2ForCausalLM, "gemma3": tf.Gemma3ForCausalLM,
            "phi3": tf.Phi3ForCausalLM}[arch]


def _embedded_tokenizer_dir(cache: Path) -> Path:
    from tuneterm.core import modelref
    from tuneterm.workers.loading import ensure_converted

    return ensure_converted(modelref.embedded_gguf_path(), cache)


def build(arch: str, out: Path, tokenizer_dir: Path) -> Path:
    """Write the checkpoint of ``arch`` into ``out`` (a new folder)."""
    import torch
    from transformers import AutoTokenizer

    template, specials, eot = _FAMILY[arch]
    tokenizer = llama3_tokenizer() if arch == "llama3" else AutoTokenizer.from_pretrained(tokenizer_dir)
    if specials:
        tokenizer.add_tokens(specials, special_tokens=True)
    if arch in _BOS:
        tokenizer.bos_token = _BOS[arch]
    if eot:
        tokenizer.eos_token = eot
    text = template_text(arch)
    if text is not None:
        tokenizer.chat_template = text
    ids = tokenizer.convert_tokens_to_ids
    config = _config(arch, len(tokenizer), ids(tokenizer.bos_token), ids(tokenizer.eos_token),
                     tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = _model_class(arch)(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def llama3_tokenizer():
    """The real Llama 3 tokenizer as a transformers fast tokenizer, from ``llama-models``' tiktoken file
    (the special tokens in Meta's order: 128,000 ranks + 256 specials)."""
    import importlib.util

    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("llama_models")
    if spec is None:
        raise ImportError("the llama3 fixture needs the llama-models package (pip install llama-models)")
    path = Path(spec.submodule_search_locations[0]) / "llama3" / "tokenizer.model"
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    specials += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(specials))]
    backend = TikTokenConverter(vocab_file=str(path), extra_special_tokens=specials).converted()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>")


def _key(arch: str) -> str:
    import transformers

    blob = json.dumps([_VERSION, arch, _FAMILY[arch], transformers.__version__, template_text(arch)])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_model(arch: str, cache: Path | None = None) -> Path:
    """The folder of the tiny ``arch`` checkpoint, built on first use and reused afterwards."""
    if arch not in _FAMILY:
        raise KeyError(f"unknown fixture architecture {arch!r}; known: {', '.join(ARCHS)}")
    cache = Path(cache or cache_root())
    final = cache / "tiny-archs" / f"{arch}-{_key(arch)}"
    if (final / "config.json").is_file():
        return final
    staging = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build(arch, staging, _embedded_tokenizer_dir(cache))
    try:
        staging.rename(final)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return final
