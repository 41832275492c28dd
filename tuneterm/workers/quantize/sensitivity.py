"""Per-layer sensitivity to int8: which Linear layers to keep in float, chosen by measurement.

Each candidate layer is quantized alone (every other layer float) and the model's next-token
distributions on the calibration texts are compared with the float model's: the mean
KL(float || one-layer-int8) per token is that layer's sensitivity. The ``quant.keep_sensitive``
most sensitive layers then stay float in the artifact. Calibration texts only: the gate's
held-out texts never pick layers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


def _batch(tokenizer: Any, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts as one right-padded batch and its attention mask."""
    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise ValueError("the calibration texts are too short to measure sensitivity")
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@torch.inference_mode()
def rank_layers(model: nn.Module, tokenizer: Any, texts: list[str], names: list[str],
                quantize_one: Callable[[nn.Linear], nn.Module], max_length: int = 64, max_texts: int = 4,
                progress: Callable[[int, int], None] | None = None) -> list[tuple[str, float]]:
    """``[(name, mean KL), ...]``, most sensitive first, for the Linear layers ``names`` of ``model``
    (left unchanged: each layer is swapped for ``quantize_one(layer)`` and put back). One forward
    pass over ``max_texts`` texts of ``max_length`` tokens per layer: ~200 passes for a 30-block model."""
    ids, mask = _batch(tokenizer, texts[:max_texts], max_length)
    keep = mask[:, 1:].bool()  # positions whose next token is real text

    def logprobs() -> torch.Tensor:
        return F.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)[keep]

    reference = logprobs()
    p_ref = reference.exp()
    scores = []
    for i, name in enumerate(names):
        layer = model.get_submodule(name)
        model.set_submodule(name, quantize_one(layer))
        try:
            kl = float((p_ref * (reference - logprobs())).sum(-1).mean())
        finally:
            model.set_submodule(name, layer)
        scores.append((name, kl))
        if progress is not None:
            progress(i + 1, len(names))
    return sorted(scores, key=lambda item: item[1], reverse=True)


def candidates(model: nn.Module, skip: list[str]) -> list[str]:
    """Linear layers that would be quantized (int8 kernels want in_features % 8 == 0).

    The output layer is not a candidate: kept float it costs a third of the decode speed on a
    small model (quant.quantize_lm_head=false does that explicitly)."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.in_features % 8 or name == "lm_head":
            continue
        if any(name == s or name.endswith("." + s) for s in skip):
            continue
        names.append(name)
    return names
