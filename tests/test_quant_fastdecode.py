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


def _int8_tiny(tiny_model_dir, mode="int8-dynamic"):
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.quantize import int8

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    int8.quantize_model(model, mode)
    return model


def test_installed_generate_is_the_lean_loop_and_matches_transformers(tiny_model_dir):
    from transformers import AutoTokenizer

    from tuneterm.workers.engine import GenerationParams, build_messages, generate_text
    from tuneterm.workers.quantize import fastgen
    from tuneterm.workers.quantize.fastdecode import FusedPart

    model = _int8_tiny(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 504, 3458, 28, 2, 17, 451, 9, 88]])
    with torch.no_grad():
        logits_before = model(ids).logits
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
                                  do_sample=False, pad_token_id=0)
    assert fastgen.install(model) and fastgen.install(model)  # idempotent
    assert isinstance(model.model.layers[0].self_attn.k_proj, FusedPart)  # one copy of the weights
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, logits_before, atol=1e-5)
    calls = []
    stream = model._tuneterm_fast.stream

    def counting(*args, **kwargs):
        calls.append(1)
        return stream(*args, **kwargs)

    model._tuneterm_fast.stream = counting
    got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
                         do_sample=False, pad_token_id=0)
    assert got.tolist() == expected.tolist() and calls
    # what chat and serve run: the engine's streamed generation, stop strings included
    params = GenerationParams(max_new_tokens=8)
    text, stats = generate_text(model, tok, build_messages("Hello there"), params)
    fallback_text, _ = generate_text(_Unwrapped(model), tok, build_messages("Hello there"), params)
    assert text == fallback_text and stats.completion_tokens >= 1 and len(calls) == 2
    stopping = GenerationParams(max_new_tokens=8, stop=[text[2:4] or "x"])
    assert generate_text(model, tok, build_messages("Hello there"), stopping)[0] == \
        generate_text(_Unwrapped(model), tok, build_messages("Hello there"), stopping)[0]
    sampled = [generate_text(model, tok, build_messages("Hi"), GenerationParams(max_new_tokens=6, temperature=0.8,
                                                                                  top_p=0.9, seed=7))[0]
               for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded sampling is repeatable
    calls.clear()
    beams = model.generate(ids, max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)  # not the loop's
    assert beams.shape == (1, ids.shape[1] + 3) and not calls


class _Unwrapped:
    """The same model with transformers' own generate (the reference for the lean loop)."""

    def __init__(self, model):
        self._model = model
        self.generate = model._tuneterm_generate_fallback

    def __getattr__(self, name):
        return getattr(self._model, name)


def test_int8_dynamic_quantizes_each_prompt_token_as_decoding_does():
    from tuneterm.workers.quantize import int8

    torch.manual_seed(0)
    for bias in (None, torch.randn(48)):
        q, s = int8.quantize_weight(torch.randn(48, 64) * 0.05)
        layer = int8.Int8DynamicLinear(q, s, bias)
        x = torch.randn(1, 12, 64)
        x[0, 0] *= 100  # an outlier token must not coarsen the others
        with torch.no_grad():
            together = layer(x)
            one_by_one = torch.cat([layer(x[:, i : i + 1]) for i in range(12)], 1)
        assert torch.allclose(together, one_by_one, rtol=1e-5, atol=1e-4)
