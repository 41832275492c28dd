"""A lean greedy decode loop for Llama-family models on CPU (fp32 or tuneterm's int8 layers).

``transformers.generate`` spends much of a small model's per-token time outside the matrix
products (cache objects, masks, logits processors, hooks). This loop does only the work:

- q/k/v fused into one matrix product per block and gate/up into another (4 instead of 7 calls;
  with per-channel int8 scales, fusing is exact);
- a static KV cache (preallocated tensors, written in place) and precomputed RoPE tables;
- ``F.rms_norm`` and ``scaled_dot_product_attention`` (GQA without repeating k/v);
- the output layer applied to the last position only.

Greedy outputs equal the model's own ``generate`` (tests check it on the tiny model).

``install(model)`` makes the loop what users get: it replaces ``model.generate`` (on that
instance) by a front that runs this loop for the calls chat, serve and eval make (one
sequence; greedy or temperature/top-k/top-p sampling; a streamer; stopping criteria and stop
strings) and hands anything else to transformers' own ``generate``. ``load_quantized`` calls it
for int8 and GGUF artifacts, so ``job:ID`` decodes through this loop without engine changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tuneterm.workers.quantize.int8 import Int8DynamicLinear, Int8WeightOnlyLinear


def fuse_linears(layers: list[nn.Module]) -> nn.Module:
    """One layer computing ``torch.cat([l(x) for l in layers], -1)``."""
    if all(isinstance(m, Int8DynamicLinear) for m in layers):
        states = [m.int8_state() for m in layers]
        bias = None if any("bias" not in s for s in states) else torch.cat([s["bias"] for s in states])
        return Int8DynamicLinear(torch.cat([s["qweight"] for s in states]), torch.cat([s["qscale"] for s in states]), bias)
    if all(isinstance(m, Int8WeightOnlyLinear) for m in layers):
        states = [m.int8_state() for m in layers]
        bias = None if any("bias" not in s for s in states) else torch.cat([s["bias"] for s in states])
        return Int8WeightOnlyLinear(torch.cat([s["qweight"] for s in states]), torch.cat([s["qscale"] for s in states]),
                                    bias, layers[0].compute_dtype)
    if all(type(m) is nn.Linear for m in layers):
        weight = torch.cat([m.weight.detach() for m in layers])
        fused = nn.Linear(weight.shape[1], weight.shape[0], bias=layers[0].bias is not None)
        fused.weight = nn.Parameter(weight, requires_grad=False)
        if layers[0].bias is not None:
            fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), requires_grad=False)
        return fused
    return _Concat(layers)


class _Concat(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.layers], -1)


class FusedPart(nn.Module):
    """Columns ``start:end`` of a fused layer's output, standing in for one of the layers fused
    (so the model and the decode loop share one copy of the weights). q, k and v receive the
    same input tensor: the fused product is computed once and the three take their slices."""

    def __init__(self, fused: nn.Module, start: int, end: int, final: bool = False) -> None:
        super().__init__()
        self.fused, self.start, self.end, self.final = fused, start, end, final
        self.in_features, self.out_features = getattr(fused, "in_features", None), end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = getattr(self.fused, "_tuneterm_last", None)  # (input, output), swapped atomically
        if last is None or last[0] is not x:
            last = (x, self.fused(x))
            self.fused._tuneterm_last = last
        if self.final:  # the last slice taken (v, up): let the product go
            self.fused._tuneterm_last = None
        return last[1][..., self.start : self.end]

    def int8_state(self) -> dict[str, torch.Tensor]:
        state = self.fused.int8_state()
        sl = slice(self.start, self.end)
        return {k: v[sl] for k, v in state.items()}


def _share(model_layers: list[tuple[nn.Module, str]], fused: nn.Module) -> None:
    """Point each original layer's slot at its slice of ``fused`` (the originals are freed)."""
    if isinstance(fused, _Concat):
        return
    start = 0
    for i, (parent, attr) in enumerate(model_layers):
        width = getattr(parent, attr).out_features
        setattr(parent, attr, FusedPart(fused, start, start + width, final=i == len(model_layers) - 1))
        start += width


@dataclass
class _Block:
    ln1: torch.Tensor
    qkv: nn.Module
    o: nn.Module
    ln2: torch.Tensor
    gate_up: nn.Module
    down: nn.Module


@dataclass
class DecodeResult:
    tokens: list[int]
    ttft_s: float
    total_s: float

    @property
    def decode_tok_s(self) -> float:
        span = self.total_s - self.ttft_s
        return (len(self.tokens) - 1) / span if len(self.tokens) > 1 and span > 0 else 0.0


class FastDecoder:
    """Greedy generation for a ``LlamaForCausalLM``-shaped model (Llama, Mistral, Qwen2 layouts)."""

    def __init__(self, model: nn.Module, max_len: int = 1024, share: bool = False) -> None:
        """``share``: the model's q/k/v and gate/up layers become slices of the fused ones (one
        copy of the weights; what ``install`` does); else the fused copies are extra."""
        cfg = model.config
        core = model.model
        self.n_head = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.hidden = cfg.hidden_size
        self.eps = float(cfg.rms_norm_eps)
        self.embed = core.embed_tokens
        self.norm = core.norm.weight.detach()
        self.lm_head = model.lm_head
        self.rotary = core.rotary_emb
        self.blocks = []
        for layer in core.layers:
            a, m = layer.self_attn, layer.mlp
            qkv = fuse_linears([a.q_proj, a.k_proj, a.v_proj])
            gate_up = fuse_linears([m.gate_proj, m.up_proj])
            if share:
                _share([(a, "q_proj"), (a, "k_proj"), (a, "v_proj")], qkv)
                _share([(m, "gate_proj"), (m, "up_proj")], gate_up)
            self.blocks.append(_Block(layer.input_layernorm.weight.detach(), qkv, a.o_proj,
                                      layer.post_attention_layernorm.weight.detach(), gate_up, m.down_proj))
        self.max_len = 0
        self._rope_tables(max_len)
        self._default_len = max_len
        self.k_cache = self.v_cache = None  # for forward() without a cache, allocated on first use
        self.eos = _eos_ids(model)
        self.threads: int | None = None  # decode steps' torch thread count (None: torch's own); see pick_threads
        self.thread_choice = None  # the threadplan.DecodeThreads that set it

    def pick_threads(self) -> int:
        """Measure which torch thread count decodes fastest here and use it for every decode step
        (``threadplan.pick_decode_threads``); prefill keeps torch's own count. Returns the count."""
        from tuneterm.workers import threadplan

        prompt = 16
        cache = self.new_cache(prompt + 64)
        ids = torch.randint(0, self.embed.num_embeddings, (1, prompt))
        step = torch.zeros(1, 1, dtype=torch.long)
        pos = [prompt]

        def one_step() -> None:
            self.forward(step, pos[0], cache=cache)
            pos[0] = prompt + (pos[0] - prompt + 1) % 64

        self.forward(ids, 0, cache=cache)
        self.thread_choice = threadplan.pick_decode_threads(one_step)
        self.threads = self.thread_choice.threads
        return self.threads

    def _rope_tables(self, length: int) -> None:
        if length <= self.max_len:
            return
        positions = torch.arange(length).unsqueeze(0)
        with torch.inference_mode():
            cos, sin = self.rotary(torch.zeros(1, 1, self.hidden), positions)
        self.cos, self.sin = cos[0].float().clone(), sin[0].float().clone()  # [length, head_dim]
        self.max_len = length

    def new_cache(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A KV cache for ``length`` positions (one per generation: concurrent calls do not mix)."""
        self._rope_tables(length)
        shape = (len(self.blocks), 1, self.n_kv, length, self.head_dim)
        return torch.empty(shape), torch.empty(shape)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, start: int, all_logits: bool = False,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits for ``ids`` ([1, T]) placed at positions start..start+T-1 (``cache`` updated;
        default: the decoder's own, for one caller at a time)."""
        T = ids.shape[1]
        end = start + T
        if cache is None:
            if self.k_cache is None:
                self.k_cache, self.v_cache = self.new_cache(self._default_len)
            cache = (self.k_cache, self.v_cache)
        k_cache, v_cache = cache
        if end > k_cache.shape[3]:
            raise ValueError(f"sequence of {end} tokens exceeds the cache's {k_cache.shape[3]} positions")
        nh, nkv, hd = self.n_head, self.n_kv, self.head_dim
        x = self.embed(ids)
        cos = self.cos[start:end].view(1, 1, T, hd)
        sin = self.sin[start:end].view(1, 1, T, hd)
        sizes = [nh * hd, nkv * hd, nkv * hd]
        for i, b in enumerate(self.blocks):
            h = F.rms_norm(x, (self.hidden,), b.ln1, self.eps)
            q, k, v = b.qkv(h).split(sizes, dim=-1)
            q = self._rope(q.view(1, T, nh, hd).transpose(1, 2), cos, sin)
            k = self._rope(k.view(1, T, nkv, hd).transpose(1, 2), cos, sin)
            k_cache[i, :, :, start:end] = k
            v_cache[i, :, :, start:end] = v.view(1, T, nkv, hd).transpose(1, 2)
            attn = F.scaled_dot_product_attention(
                q, k_cache[i, :, :, :end], v_cache[i, :, :, :end],
                is_causal=T > 1 and start == 0, enable_gqa=nkv != nh,
            )
            x = x + b.o(attn.transpose(1, 2).reshape(1, T, nh * hd))
            h = F.rms_norm(x, (self.hidden,), b.ln2, self.eps)
            gate, up = b.gate_up(h).chunk(2, dim=-1)
            x = x + b.down(F.silu(gate) * up)
        x = F.rms_norm(x if all_logits else x[:, -1:], (self.hidden,), self.norm, self.eps)
        return self.lm_head(x)

    def stream(self, input_ids: torch.Tensor, max_new_tokens: int,
               pick: Callable[[torch.Tensor], int] | None = None) -> Iterator[int]:
        """Token ids one by one: prefill the prompt, then one step per token (``pick`` chooses
        from the last position's logits; default greedy). Its own KV cache, sized to the call.
        The caller stops it (end of sequence, stop strings) by not asking for more."""
        from tuneterm.workers.threadplan import torch_threads

        pick = pick or _greedy
        prompt = input_ids.shape[1]
        cache = self.new_cache(prompt + max_new_tokens)
        token = pick(self.forward(input_ids, 0, cache=cache)[0, -1])
        yield token
        step = torch.empty(1, 1, dtype=torch.long)
        for pos in range(prompt, prompt + max_new_tokens - 1):
            step[0, 0] = token
            with torch_threads(self.threads):  # set and restored around each step: the caller's thread may run other torch work between tokens
                logits = self.forward(step, pos, cache=cache)
            token = pick(logits[0, -1])
            yield token

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, stop_at_eos: bool = True) -> DecodeResult:
        """Greedy, with the time to the first token and the total."""
        started = time.perf_counter()
        tokens: list[int] = []
        ttft = 0.0
        for token in self.stream(input_ids, max_new_tokens):
            if not tokens:
                ttft = time.perf_counter() - started
            tokens.append(token)
            if stop_at_eos and token in self.eos:
                break
        return DecodeResult(tokens, ttft, time.perf_counter() - started)


def _greedy(logits: torch.Tensor) -> int:
    return int(logits.argmax())


def _eos_ids(model: nn.Module) -> set[int]:
    value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if value is None:
        value = getattr(model.config, "eos_token_id", None)
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)
