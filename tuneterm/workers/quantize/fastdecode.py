"""A lean greedy decode loop for Llama-family models on CPU (fp32 or tuneterm's int8 layers).

``transformers.generate`` spends much of a small model's per-token time outside the matrix
products (cache objects, masks, logits processors, hooks). This loop does only the work:

- q/k/v fused into one matrix product per block and gate/up into another (4 instead of 7 calls;
  with per-channel int8 scales, fusing is exact);
- a static KV cache (preallocated tensors, written in place) and precomputed RoPE tables;
- ``F.rms_norm`` and ``scaled_dot_product_attention`` (GQA without repeating k/v);
- the output layer applied to the last position only.

Greedy outputs equal the model's own ``generate`` (tests check it on the tiny model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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

    def __init__(self, model: nn.Module, max_len: int = 1024) -> None:
        cfg = model.config
        core = model.model
        self.n_head = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.hidden = cfg.hidden_size
        self.eps = float(cfg.rms_norm_eps)
        self.max_len = max_len
        self.embed = core.embed_tokens
        self.norm = core.norm.weight.detach()
        self.lm_head = model.lm_head
        self.blocks = []
        for layer in core.layers:
            a, m = layer.self_attn, layer.mlp
            self.blocks.append(_Block(
                layer.input_layernorm.weight.detach(), fuse_linears([a.q_proj, a.k_proj, a.v_proj]), a.o_proj,
                layer.post_attention_layernorm.weight.detach(), fuse_linears([m.gate_proj, m.up_proj]), m.down_proj,
            ))
        positions = torch.arange(max_len).unsqueeze(0)
        probe = torch.zeros(1, 1, self.hidden)
        with torch.inference_mode():
            cos, sin = core.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].float().clone(), sin[0].float().clone()  # [max_len, head_dim]
        shape = (len(self.blocks), 1, self.n_kv, max_len, self.head_dim)
        self.k_cache = torch.zeros(shape)
        self.v_cache = torch.zeros(shape)
        self.eos = _eos_ids(model)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, start: int, all_logits: bool = False) -> torch.Tensor:
        """Logits for ``ids`` ([1, T]) placed at positions start..start+T-1 (cache updated)."""
        T = ids.shape[1]
        end = start + T
        if end > self.max_len:
            raise ValueError(f"sequence of {end} tokens exceeds the decoder's max_len {self.max_len}")
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
            self.k_cache[i, :, :, start:end] = k
            self.v_cache[i, :, :, start:end] = v.view(1, T, nkv, hd).transpose(1, 2)
            attn = F.scaled_dot_product_attention(
                q, self.k_cache[i, :, :, :end], self.v_cache[i, :, :, :end],
                is_causal=T > 1 and start == 0, enable_gqa=nkv != nh,
            )
            x = x + b.o(attn.transpose(1, 2).reshape(1, T, nh * hd))
            h = F.rms_norm(x, (self.hidden,), b.ln2, self.eps)
            gate, up = b.gate_up(h).chunk(2, dim=-1)
            x = x + b.down(F.silu(gate) * up)
        x = F.rms_norm(x if all_logits else x[:, -1:], (self.hidden,), self.norm, self.eps)
        return self.lm_head(x)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, stop_at_eos: bool = True) -> DecodeResult:
        """Greedy: prefill the prompt, then one token per step."""
        if input_ids.shape[1] > 1 and input_ids.shape[1] + max_new_tokens > self.max_len:
            raise ValueError("prompt plus new tokens exceed max_len")
        started = time.perf_counter()
        logits = self.forward(input_ids, 0)
        token = int(logits[0, -1].argmax())
        ttft = time.perf_counter() - started
        tokens = [token]
        pos = input_ids.shape[1]
        step = torch.empty(1, 1, dtype=torch.long)
        while len(tokens) < max_new_tokens and not (stop_at_eos and token in self.eos):
            step[0, 0] = token
            logits = self.forward(step, pos)
            pos += 1
            token = int(logits[0, -1].argmax())
            tokens.append(token)
        return DecodeResult(tokens, ttft, time.perf_counter() - started)


def _eos_ids(model: nn.Module) -> set[int]:
    value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if value is None:
        value = getattr(model.config, "eos_token_id", None)
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)
