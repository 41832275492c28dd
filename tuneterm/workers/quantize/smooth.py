"""SmoothQuant-style scaling for int8 activations (Xiao et al., 2022), for the decoder blocks of
Llama, Mistral, Qwen, Phi-3 (fused projections) and Gemma ((1 + w) norms) models.

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


@torch.inference_mode()
def _offset_norm(norm: nn.Module) -> bool:
    """Whether the norm scales by (1 + weight) (Gemma) rather than by weight (Llama, Qwen, Phi-3, Mistral):
    probed, with the weight zeroed for one call."""
    saved = norm.weight.data.clone()
    try:
        norm.weight.data.zero_()
        out = norm(torch.ones(1, saved.shape[0], dtype=saved.dtype, device=saved.device))
    finally:
        norm.weight.data.copy_(saved)
    return bool(out.abs().amax() > 0)


@torch.inference_mode()
def _fold_norm(norm: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    if _offset_norm(norm):  # (1 + w') = (1 + w) / s
        w = norm.weight.data
        w.copy_(((1 + w.float()) / s.to(w.device) - 1).to(w.dtype))
        for m in linears:
            m.weight.mul_(s.view(1, -1).to(m.weight.dtype))
    else:
        _fold(norm.weight.data, linears, s)


def _layer_groups(layer) -> list[tuple]:
    """(what produces the activation, the linears reading it) for one decoder block, for the layouts
    of Llama/Mistral/Qwen (separate projections), Phi-3 (fused ``qkv_proj``/``gate_up_proj``) and
    Gemma 2/3 (the norm before the MLP is ``pre_feedforward_layernorm``; ``post_attention_layernorm``
    normalises the attention output there, so nothing folds into it)."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    groups = []
    norm_in = getattr(layer, "input_layernorm", None)
    norm_mlp = getattr(layer, "pre_feedforward_layernorm", None)
    if norm_mlp is None and not hasattr(layer, "post_feedforward_layernorm"):
        norm_mlp = getattr(layer, "post_attention_layernorm", None)
    if attn is not None and norm_in is not None:
        fused = getattr(attn, "qkv_proj", None)
        linears = [fused] if fused is not None else [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj")]
        groups.append(("norm", norm_in, linears))
    if mlp is not None and norm_mlp is not None:
        fused = getattr(mlp, "gate_up_proj", None)
        if fused is not None:
            groups.append(("norm", norm_mlp, [fused]))
            half = fused.weight.shape[0] // 2  # rows [gate; up]: down_proj reads act(gate) * up
            up_bias = None if fused.bias is None else fused.bias.data[half:]
            groups.append(("rows", (fused.weight.data[half:], up_bias), [getattr(mlp, "down_proj", None)]))
        else:
            groups.append(("norm", norm_mlp, [getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None)]))
            up = getattr(mlp, "up_proj", None)
            if up is not None:
                groups.append(("rows", (up.weight.data, None if up.bias is None else up.bias.data),
                               [getattr(mlp, "down_proj", None)]))
    return groups


def smooth_model(model: nn.Module, act_max: dict[str, torch.Tensor], alpha: float = 0.5,
                 lm_head: bool = True) -> int:
    """Apply the scaling in place (the float outputs stay the same); returns the groups scaled."""
    core = getattr(model, "model", None)
    if core is None or not hasattr(core, "layers"):
        return 0
    names = {m: n for n, m in model.named_modules()}
    done = 0
    for layer in core.layers:
        for kind, prev, linears in _layer_groups(layer):
            if not linears or not all(isinstance(m, nn.Linear) for m in linears):
                continue
            key = names.get(linears[0])
            if key not in act_max:
                continue
            s = _scales(act_max[key], linears, alpha)
            if kind == "norm":
                if prev.weight.dim() != 1 or prev.weight.shape[0] != s.shape[0]:
                    continue
                _fold_norm(prev, linears, s)
            else:
                _fold(prev[0], linears, s, prev[1])
            done += 1
    head = getattr(model, "lm_head", None)
    if lm_head and isinstance(head, nn.Linear) and "lm_head" in act_max and hasattr(core, "norm"):
        if head.weight.data_ptr() == core.embed_tokens.weight.data_ptr():  # untie: the embedding keeps its values
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
            model.config.tie_word_embeddings = False
        s = _scales(act_max["lm_head"], [head], alpha)
        _fold_norm(core.norm, [head], s)
        done += 1
    return done
