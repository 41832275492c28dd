"""The lean decode loop gives the same greedy tokens and logits as the model it wraps."""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.mark.parametrize("mode", ["fp32", "int8-dynamic"])
def test_fast_decoder_matches_transformers_generate(tiny_model_dir, mode):
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.quantize import int8
    from tuneterm.workers.quantize.fastdecode import FastDecoder

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    if mode != "fp32":
        int8.quantize_model(model, mode)
    ids = torch.tensor([[1, 504, 3458, 28, 2, 17, 451, 9, 88]])
    decoder = FastDecoder(model, max_len=64)
    with torch.no_grad():
        full = model(ids).logits
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                  min_new_tokens=12, pad_token_id=0)[0, ids.shape[1]:].tolist()
    assert torch.allclose(decoder.forward(ids, 0, all_logits=True), full, atol=1e-4)
    result = decoder.generate(ids, 12, stop_at_eos=False)
    assert result.tokens == expected
    assert result.ttft_s > 0 and len(result.tokens) == 12


def test_fusing_int8_layers_is_exact(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.quantize import int8
    from tuneterm.workers.quantize.fastdecode import fuse_linears

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for mode in ("int8-dynamic", "int8-weight-only"):
        m = copy.deepcopy(model)
        int8.quantize_model(m, mode)
        attn = m.model.layers[0].self_attn
        x = torch.randn(1, 3, 64)
        with torch.no_grad():
            separate = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], -1)
            fused = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])(x)
        assert torch.allclose(fused, separate, atol=1e-6)
