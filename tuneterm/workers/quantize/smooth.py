"""SmoothQuant-style scaling for int8 activations (Xiao et al., 2022), for Llama-family blocks.

Small Llama models have a few input channels with activations tens of times larger than the
rest; quantizing a whole activation row to int8 with one scale then rounds everything else to
a few levels (on SmolLM2-135M, int8-dynamic without smoothing raised perplexity by ~90%, mostly
in ``down_proj``). Dividing channel j of the activation by s_j and multiplying column j of the
next weights by s_j leaves the float model unchanged and moves the difficulty into the weights,
which are quantized per output channel. The division is folded into what produced the
activation: the RMSNorm weight before q/k/v and gate/up, the rows of ``up_proj`` before
``down_proj``, and the final norm before the output layer.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.inference_mode()
def calibrate(model: nn.Module, tokenizer, texts: list[str], max_length: int = 256) -> dict[str, torch.Tensor]:
    """Per-input-channel max |activation| of every nn.Linear over ``texts``."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name):
        def record(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0).float()
            stats[name] = torch.maximum(stats[name], x) if name in stats else x
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_pre_hook(hook(name)))
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return stats


def outlier_layers(act_max: dict[str, torch.Tensor], ratio: float) -> list[str]:
    """Linear layers whose input has a channel ``ratio`` times above the median channel: even
    smoothed, int8 activations lose too much there, so they stay float (one or two per model)."""
    return sorted(name for name, m in act_max.items()
                  if name != "lm_head" and float(m.max() / m.median().clamp(min=1e-8)) > ratio)


def _scales(act_max: torch.Tensor, linears: list[nn.Linear], alpha: float) -> torch.Tensor:
    w_max = torch.stack([m.weight.detach().abs().amax(dim=0).float() for m in linears]).amax(dim=0)
    s = act_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.inference_mode()
def _fold(prev_weight: torch.Tensor, linears: list[nn.Linear], s: torch.Tensor, prev_bias=None) -> None:
    """prev output channel j /= s_j; next input column j *= s_j."""
    shape = (-1,) + (1,) * (prev_weight.dim() - 1)
    prev_weight.div_(s.view(shape).to(prev_weight.dtype))
    if prev_bias is not None:
        prev_bias.div_(s.to(prev_bias.dtype))
    for m in linears:
        m.weight.mul_(s.view(1, -1).to(m.weight.dtype))


def smooth_llama(model: nn.Module, act_max: dict[str, torch.Tensor], alpha: float = 0.5,
                 lm_head: bool = True) -> int:
    """Apply the scaling in place (the float outputs stay the same); returns the groups scaled."""
    core = getattr(model, "model", None)
    if core is None or not hasattr(core, "layers"):
        return 0
    names = {m: n for n, m in model.named_modules()}
    done = 0
    for layer in core.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        groups = []
        if attn is not None and hasattr(layer, "input_layernorm"):
            groups.append((layer.input_layernorm.weight, None, [attn.q_proj, attn.k_proj, attn.v_proj]))
        if mlp is not None and hasattr(layer, "post_attention_layernorm"):
            groups.append((layer.post_attention_layernorm.weight, None, [mlp.gate_proj, mlp.up_proj]))
            groups.append((mlp.up_proj.weight, mlp.up_proj.bias, [mlp.down_proj]))
        for prev_w, prev_b, linears in groups:
            key = names.get(linears[0])
            if key not in act_max or not all(isinstance(m, nn.Linear) for m in linears):
                continue
            s = _scales(act_max[key], linears, alpha)
            if prev_w.dim() == 1 and prev_w.shape[0] != s.shape[0]:
                continue
            _fold(prev_w.data, linears, s, None if prev_b is None else prev_b.data)
            done += 1
    head = getattr(model, "lm_head", None)
    if lm_head and isinstance(head, nn.Linear) and "lm_head" in act_max and hasattr(core, "norm"):
        if head.weight.data_ptr() == core.embed_tokens.weight.data_ptr():  # untie: the embedding keeps its values
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
            model.config.tie_word_embeddings = False
        s = _scales(act_max["lm_head"], [head], alpha)
        _fold(core.norm.weight.data, [head], s)
        done += 1
    return done
