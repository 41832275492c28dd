"""Export a transformers checkpoint (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 text, Phi-3) to GGUF
(f32, f16 or q8_0) for llama.cpp/Ollama.

Written against the ``gguf`` package (GGUFWriter + gguf.quants): tensor names from the package's
own per-architecture table (``gguf.get_tensor_name_map``), and the transforms llama.cpp's
convert_hf_to_gguf.py applies: the q/k row permutation for Llama/Mistral, 1 + w for Gemma's norms. The tokenizer (byte-level BPE: GPT-2 style vocab and merges) and the chat template
go into the file, so llama.cpp needs nothing else. ``read_back`` lists what a file holds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneterm.core.errors import InputError

# transformers class -> llama.cpp architecture (Mistral is written as llama, as llama.cpp's converter does)
SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                   "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
                   "Phi3ForCausalLM": "phi3"}
_OFFSET_NORMS = ("gemma2", "gemma3")  # HF stores w for (1 + w) norms; GGUF holds 1 + w


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved pairs (as convert_hf_to_gguf does)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def arch_of(config: Any, model: Any = None) -> str | None:
    """The llama.cpp architecture name of a transformers config (None: not exportable)."""
    names = list(getattr(config, "architectures", None) or []) + ([type(model).__name__] if model is not None else [])
    return next((SUPPORTED_ARCHS[n] for n in names if n in SUPPORTED_ARCHS), None)


@functools.lru_cache(maxsize=16)
def _name_map(arch: str, n_blocks: int) -> Any:
    import gguf

    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    return gguf.get_tensor_name_map(kind, n_blocks)


def gguf_name(hf_name: str, arch: str = "llama", n_blocks: int = 256) -> str | None:
    """The GGUF tensor name of a transformers tensor, from the ``gguf`` package's own table for ``arch``."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    return _name_map(arch, n_blocks).get_name(hf_name, try_suffixes=(".weight", ".bias"))


def expected_tensors(model: Any) -> set[str]:
    """The GGUF tensor names an export of ``model`` holds."""
    cfg = model.config
    arch = arch_of(cfg, model) or "llama"
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    names = {gguf_name(k, arch, cfg.num_hidden_layers) for k in model.state_dict()
             if not (k == "lm_head.weight" and tied)}
    return {n for n in names if n}


def _to_gguf(target: str, data: np.ndarray, arch: str, n_head: int, n_kv: int) -> np.ndarray:
    if arch == "llama" and target.endswith("attn_q.weight"):
        return _permute(data, n_head)
    if arch == "llama" and target.endswith("attn_k.weight"):
        return _permute(data, n_kv)
    if arch in _OFFSET_NORMS and target.endswith("norm.weight"):
        return data + 1
    return data


def _from_gguf(target: str, data: np.ndarray, arch: str, n_head: int, n_kv: int) -> np.ndarray:
    if arch == "llama" and target.endswith("attn_q.weight"):
        return _unpermute(data, n_head)
    if arch == "llama" and target.endswith("attn_k.weight"):
        return _unpermute(data, n_kv)
    if arch in _OFFSET_NORMS and target.endswith("norm.weight"):
        return data - 1
    return data


def _tensor_type(name: str, data: np.ndarray, outtype: str):
    import gguf

    if data.ndim == 1 or outtype == "f32":
        return gguf.GGMLQuantizationType.F32
    if outtype == "f16":
        return gguf.GGMLQuantizationType.F16
    if data.shape[-1] % 32:  # q8_0 blocks are 32 values along a row
        return gguf.GGMLQuantizationType.F16
    return gguf.GGMLQuantizationType.Q8_0


def _tokenizer_pre(tokenizer: Any, wanted: str) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (``llama-vocab.cpp``), recognised by the
    vocabulary's fixed special-token ids; added tokens (a template's turn markers) do not change it."""
    if wanted != "auto":
        return wanted
    vocab = tokenizer.get_vocab()
    if vocab.get("<|endoftext|>") == 0 and vocab.get("<|im_start|>") == 1:  # SmolLM/SmolLM2 (the embedded model)
        return "smollm"
    if vocab.get("<|begin_of_text|>") == 128000:  # Llama 3.x
        return "llama-bpe"
    if vocab.get("<|endoftext|>") == 151643:  # Qwen2/2.5/3
        return "qwen2"
    return "gpt-2"


def byte_level_bpe(tokenizer: Any) -> tuple[dict, dict]:
    """The tokenizer's spec and BPE model; an InputError, before anything is written, for what this
    exporter cannot describe: SentencePiece vocabularies (Llama 2, Mistral, Gemma, Phi-3: a BPE model
    with byte fallback and ``▁`` spaces in transformers, ``tokenizer.ggml.model=llama`` with scores
    in GGUF) and any other non-byte-level model."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    byte_level = "ByteLevel" in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
        kind = "SentencePiece-style" if model.get("byte_fallback") or "Metaspace" in json.dumps(spec) else "non byte-level"
        raise InputError(
            f"GGUF export supports byte-level BPE tokenizers only; this one is {kind}",
            [("tokenizer model", str(model.get("type"))), ("byte fallback", str(bool(model.get("byte_fallback"))))],
            "quantize with int8-dynamic or bnb-* instead, or use llama.cpp's convert_hf_to_gguf.py for this model",
        )
    return spec, model


def _tokenizer_metadata(writer: Any, tokenizer: Any, pre: str) -> None:
    import gguf

    spec, model = byte_level_bpe(tokenizer)
    vocab: dict[str, int] = model["vocab"]
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, tok in added.items():
        vocab.setdefault(content, tok["id"])
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, idx in vocab.items():
        tokens[idx] = text
        types[idx] = gguf.TokenType.NORMAL
    for content, tok in added.items():
        types[tok["id"]] = gguf.TokenType.CONTROL if tok.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, value in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
    ):
        if value is not None:
            setter(int(value))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    writer.add_add_space_prefix(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def export(model: Any, tokenizer: Any, out_file: Path, outtype: str = "q8_0", name: str = "tuneterm export",
           tokenizer_pre: str = "auto") -> dict:
    """Write ``model`` (a float Llama-family model on CPU) to ``out_file``; returns facts."""
    import gguf

    cfg = model.config
    arch = arch_of(cfg, model)
    if arch is None:
        arch_class = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
        raise InputError(
            "GGUF export does not support this architecture",
            [("architecture", arch_class), ("supported", ", ".join(sorted(SUPPORTED_ARCHS)))],
            "quantize with int8-dynamic or bnb-* instead, or use llama.cpp's converter",
        )
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    swa_theta = None
    if isinstance(rope, dict) and "full_attention" in rope:  # per-layer-type parameters (Gemma 3)
        swa_theta = (rope.get("sliding_attention") or {}).get("rope_theta")
        rope = rope["full_attention"] or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    theta = theta or getattr(cfg, "rope_theta", None) or 10000.0
    if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
        raise InputError("GGUF export supports plain RoPE only", [("rope_type", str(rope.get("rope_type")))])

    byte_level_bpe(tokenizer)  # refuse before writing anything
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_block_count(int(cfg.num_hidden_layers))
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(int(n_head))
    writer.add_head_count_kv(int(n_kv))
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_vocab_size(int(cfg.vocab_size))
    if arch != "llama":
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    if arch in ("gemma2", "gemma3") or getattr(cfg, "use_sliding_window", True):
        if getattr(cfg, "sliding_window", None):
            writer.add_sliding_window(int(cfg.sliding_window))
    for key, setter in (("attn_logit_softcapping", writer.add_attn_logit_softcapping),
                        ("final_logit_softcapping", writer.add_final_logit_softcapping)):
        if getattr(cfg, key, None):
            setter(float(getattr(cfg, key)))
    if swa_theta:
        writer.add_rope_freq_base_swa(float(swa_theta))
    types = getattr(cfg, "layer_types", None)
    if arch in ("gemma2", "gemma3") and types:
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    if arch == "phi3":
        original = getattr(cfg, "original_max_position_embeddings", None) or cfg.max_position_embeddings
        writer.add_rope_scaling_orig_ctx_len(int(original))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, tokenizer, _tokenizer_pre(tokenizer, tokenizer_pre))

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    written: dict[str, str] = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        target = gguf_name(hf_name, arch, cfg.num_hidden_layers)
        if target is None:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            raise InputError("a tensor has no GGUF name", [("tensor", hf_name), ("architecture", arch)],
                             f"this model has parts the {arch} GGUF layout does not hold")
        data = _to_gguf(target, tensor.detach().to(torch.float32).cpu().numpy(), arch, n_head, n_kv)
        qtype = _tensor_type(target, data, outtype)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        written[target] = qtype.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_file)
    return {"file": out_file.name, "outtype": outtype, "tensors": len(written),
            "size_bytes": out_file.stat().st_size}


_READER: dict = {}


def _reader(path: Path) -> Any:
    """One parsed GGUFReader per file version (parsing a 49k-token vocabulary takes seconds):
    the export's read-back check and the gate's load share it."""
    import gguf

    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _READER:
        _READER.clear()
        _READER[key] = gguf.GGUFReader(str(path))
    return _READER[key]


def read_back(path: Path) -> dict:
    """What a GGUF file holds: architecture, key metadata and {tensor name: (shape, type)}."""
    reader = _reader(path)

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    tensors = {t.name: ([int(x) for x in t.shape], t.tensor_type.name) for t in reader.tensors}
    return {
        "architecture": field("general.architecture"),
        "block_count": field(f"{field('general.architecture')}.block_count"),
        "file_type": field("general.file_type"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0,
        "chat_template": field("tokenizer.chat_template"),
        "tokenizer_pre": field("tokenizer.ggml.pre"),
        "imatrix_entries": field("quantize.imatrix.entries_count"),  # set by llama.cpp's quantizer with a matrix
        "tensors": tensors,
    }


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def load_model(folder: Path, file_name: str) -> Any:
    """A float transformers model from a GGUF this module wrote, next to its ``config.json``.

    Reads the tensors with ``gguf.GGUFReader`` and de-quantizes them with ``gguf.quants``;
    about 4x quicker than transformers' general GGUF loader, which also rebuilds the tokenizer.
    """
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    arch = arch_of(config) or "llama"
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    reader = _reader(folder / file_name)
    by_name = {t.name: t for t in reader.tensors}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {}
    for hf_name, ref in model.state_dict().items():
        target = gguf_name(hf_name, arch, config.num_hidden_layers)
        if hf_name == "lm_head.weight" and target not in by_name and config.tie_word_embeddings:
            continue
        if target not in by_name:
            raise ValueError(f"{file_name} lacks {target} (for {hf_name})")
        t = by_name[target]
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(ref.shape))
        data = _from_gguf(target, data, arch, n_head, n_kv)
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(data))
    if config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    from tuneterm.workers.quantize.int8 import _rebuild_meta_buffers

    _rebuild_meta_buffers(model)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()
