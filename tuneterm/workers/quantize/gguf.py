"""Export a Llama-architecture transformers checkpoint to GGUF (f32, f16 or q8_0) for llama.cpp/Ollama.

Written against the ``gguf`` package (GGUFWriter + gguf.quants), following the tensor names,
metadata keys and the q/k row permutation that llama.cpp's own convert_hf_to_gguf.py uses for
Llama models. The tokenizer (byte-level BPE: GPT-2 style vocab and merges) and the chat template
go into the file, so llama.cpp needs nothing else. ``read_back`` lists what a file holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneterm.core.errors import InputError

SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}

_LAYER_MAP = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved pairs (as convert_hf_to_gguf does)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def gguf_name(hf_name: str) -> str | None:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        inner = ".".join(parts[3:-1])
        if inner in _LAYER_MAP:
            return f"blk.{parts[2]}.{_LAYER_MAP[inner]}.{parts[-1]}"
    return None


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
    if wanted != "auto":
        return wanted
    vocab = tokenizer.get_vocab()
    # SmolLM/SmolLM2 (the embedded model and its fine-tunes): llama.cpp calls this pre-tokenizer "smollm".
    if len(vocab) == 49152 and vocab.get("<|endoftext|>") == 0 and vocab.get("<|im_start|>") == 1:
        return "smollm"
    return "gpt2"


def _tokenizer_metadata(writer: Any, tokenizer: Any, pre: str) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise InputError(
            "GGUF export supports byte-level BPE tokenizers only",
            [("tokenizer model", str(model.get("type")))],
            "use llama.cpp's convert_hf_to_gguf.py for SentencePiece tokenizers",
        )
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
    arch_class = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
    if arch_class not in SUPPORTED_ARCHS and type(model).__name__ not in SUPPORTED_ARCHS:
        raise InputError(
            "GGUF export supports Llama-architecture models",
            [("architecture", arch_class)],
            "quantize with int8-dynamic or bnb-* instead, or use llama.cpp's converter",
        )
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    theta = theta or getattr(cfg, "rope_theta", None) or 10000.0
    if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
        raise InputError("GGUF export supports plain RoPE only", [("rope_type", str(rope.get("rope_type")))])

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
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
        target = gguf_name(hf_name)
        if target is None:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            raise InputError("a tensor has no GGUF name", [("tensor", hf_name)],
                             "this model has parts the Llama GGUF layout does not hold")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if target.endswith("attn_q.weight"):
            data = _permute(data, n_head)
        elif target.endswith("attn_k.weight"):
            data = _permute(data, n_kv)
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
        "block_count": field("llama.block_count"),
        "file_type": field("general.file_type"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0,
        "chat_template": field("tokenizer.chat_template"),
        "tokenizer_pre": field("tokenizer.ggml.pre"),
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
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    reader = _reader(folder / file_name)
    by_name = {t.name: t for t in reader.tensors}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {}
    for hf_name, ref in model.state_dict().items():
        target = gguf_name(hf_name)
        if hf_name == "lm_head.weight" and target not in by_name and config.tie_word_embeddings:
            continue
        if target not in by_name:
            raise ValueError(f"{file_name} lacks {target} (for {hf_name})")
        t = by_name[target]
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(ref.shape))
        if target.endswith("attn_q.weight"):
            data = _unpermute(data, n_head)
        elif target.endswith("attn_k.weight"):
            data = _unpermute(data, n_kv)
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(data))
    if config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    from tuneterm.workers.quantize.int8 import _rebuild_meta_buffers

    _rebuild_meta_buffers(model)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()
