"""``model.generate`` through tuneterm's lean decode loop (``fastdecode.FastDecoder``).

``install(model)`` gives one model instance a ``generate`` that runs the lean loop for the
calls chat, serve and eval make (``tuneterm.workers.engine.stream_chat``): one sequence, an
all-ones attention mask, greedy or sampling with temperature / top-k / top-p, a streamer,
stopping criteria, stop strings, ``max_new_tokens`` / ``min_new_tokens``. Any other argument
(beams, batches, penalties, PEFT's ``adapter_names`` ...) goes to transformers' own
``generate``, unchanged. ``quant_loading.load_quantized`` installs it for int8 and GGUF
artifacts, so ``job:ID`` decodes through the loop the benchmark measures, with the thread
count it measured fastest for decode steps (``FastDecoder.pick_threads``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tuneterm.workers.quantize.fastdecode import FastDecoder

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")
# generate() arguments the lean loop honours; anything else goes to transformers
_HANDLED = {"input_ids", "attention_mask", "max_new_tokens", "min_new_tokens", "streamer", "do_sample",
            "temperature", "top_p", "top_k", "pad_token_id", "eos_token_id", "stopping_criteria",
            "stop_strings", "tokenizer", "use_cache", "return_dict_in_generate", "output_scores"}
# generation_config fields that change the distribution: the loop runs only while they are neutral
_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "typical_p": 1.0,
            "min_p": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "bad_words_ids": None,
            "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
            "forced_eos_token_id": None, "sequence_bias": None, "guidance_scale": None,
            "encoder_repetition_penalty": 1.0, "exponential_decay_length_penalty": None}


def supports(model: nn.Module) -> bool:
    """A Llama-shaped causal LM on the CPU, without sliding-window attention."""
    cfg = getattr(model, "config", None)
    core = getattr(model, "model", None)
    if cfg is None or core is None or getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    layers = getattr(core, "layers", None)
    if not layers or not all(hasattr(core, a) for a in ("embed_tokens", "norm", "rotary_emb")):
        return False
    layer = layers[0]
    if not all(hasattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return False
    if not all(hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    return all(p.device.type == "cpu" for p in model.parameters())


def install(model: nn.Module, max_len: int = 1024) -> bool:
    """Route ``model.generate`` through the lean loop (see module docstring); False when the
    model does not fit the loop (nothing changes then). Idempotent."""
    if getattr(model, "_tuneterm_fast", None) is not None:
        return True
    if not supports(model):
        return False
    decoder = FastDecoder(model, max_len=max_len, share=True)
    decoder.pick_threads()  # measured once here, so the gate, chat, serve and eval decode with the same count
    original = model.generate

    def generate(*args: Any, **kwargs: Any):
        plan = _plan(model, args, kwargs)
        if plan is None:
            return original(*args, **kwargs)
        return _run(model, decoder, **plan)

    model.generate = generate
    model._tuneterm_fast = decoder
    model._tuneterm_generate_fallback = original
    return True


def _plan(model: nn.Module, args: tuple, kwargs: dict) -> dict | None:
    """The call's settings when the lean loop can serve it, else None."""
    if len(args) > 1 or set(kwargs) - _HANDLED or kwargs.get("generation_config") is not None:
        return None
    ids = args[0] if args else kwargs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        return None
    mask = kwargs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        return None
    if kwargs.get("return_dict_in_generate") or kwargs.get("output_scores"):
        return None
    gc = getattr(model, "generation_config", None)
    for key, neutral in _NEUTRAL.items():
        if gc is not None and getattr(gc, key, neutral) not in (neutral, None):
            return None
    sample = kwargs.get("do_sample")
    if sample is None:
        sample = bool(getattr(gc, "do_sample", False))
    temperature = _setting(kwargs, gc, "temperature", 1.0)
    top_k = _setting(kwargs, gc, "top_k", 0) or 0
    top_p = _setting(kwargs, gc, "top_p", 1.0)
    max_new = kwargs.get("max_new_tokens") or getattr(gc, "max_new_tokens", None)
    if not max_new:
        return None
    eos = kwargs.get("eos_token_id")
    eos = set(model._tuneterm_fast.eos) if eos is None else ({eos} if isinstance(eos, int) else set(eos))
    return {"ids": ids.cpu(), "max_new": int(max_new), "min_new": int(kwargs.get("min_new_tokens") or 0),
            "sample": bool(sample) and temperature > 0, "temperature": float(temperature), "top_k": int(top_k),
            "top_p": float(top_p), "eos": eos, "streamer": kwargs.get("streamer"),
            "criteria": list(kwargs.get("stopping_criteria") or []),
            "stop_strings": kwargs.get("stop_strings"), "tokenizer": kwargs.get("tokenizer")}


def _setting(kwargs: dict, gc: Any, key: str, default: float) -> float:
    value = kwargs.get(key)
    if value is None:
        value = getattr(gc, key, None) if gc is not None else None
    return default if value is None else value


def _sampler(temperature: float, top_k: int, top_p: float):
    def pick(logits: torch.Tensor) -> int:
        scores = logits.float() / temperature
        if 0 < top_k < scores.shape[-1]:
            kth = torch.topk(scores, top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True)
            cumulative = torch.softmax(ordered, -1).cumsum(-1)
            drop = cumulative - torch.softmax(ordered, -1) >= top_p  # keep the smallest set reaching top_p
            scores = scores.index_fill(0, order[drop], float("-inf"))
        return int(torch.multinomial(torch.softmax(scores, -1), 1))
    return pick


def _argmax(logits: torch.Tensor) -> int:
    return int(logits.argmax())


def _run(model: nn.Module, decoder: FastDecoder, ids: torch.Tensor, max_new: int, min_new: int, sample: bool,
         temperature: float, top_k: int, top_p: float, eos: set[int], streamer: Any, criteria: list,
         stop_strings: Any, tokenizer: Any) -> torch.Tensor:
    """One generation, transformers-shaped: the prompt and new tokens as a [1, n] tensor."""
    if stop_strings:
        from transformers import StopStringCriteria

        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    prompt = ids.shape[1]
    out = torch.empty(1, prompt + max_new, dtype=torch.long)
    out[:, :prompt] = ids
    n = prompt
    if streamer is not None:
        streamer.put(ids)
    choose = _sampler(temperature, top_k, top_p) if sample else _argmax
    made = [0]

    def pick(logits: torch.Tensor) -> int:
        if made[0] < min_new and eos:  # as transformers does: no end of sequence before min_new_tokens
            logits = logits.index_fill(0, torch.tensor(sorted(eos)), float("-inf"))
        made[0] += 1
        return choose(logits)

    steps = decoder.stream(ids, max_new, pick)
    try:
        with torch.inference_mode():
            for token in steps:
                out[0, n] = token
                n += 1
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if token in eos:
                    break
                if criteria and any(bool(torch.as_tensor(c(out[:, :n], None)).any()) for c in criteria):
                    break
    finally:
        steps.close()
        if streamer is not None:
            streamer.end()
    return out[:, :n]

