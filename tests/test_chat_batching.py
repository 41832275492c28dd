"""Batched decoding of one base model's variants (tuneterm.workers.batcher) on the tiny model:
the base and two LoRA adapters decoded in one batch, requests joining mid-stream, each with its
own settings; every stream equals what its variant answers alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

LONG = ("please tell me, in as many words as you can manage, everything you know about lighthouses, "
        "bottles, messages, the sea and the people who keep the lights burning at night")


def _adapter(tiny_model_dir, out: Path, seed: int, targets: list[str]) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=64, target_modules=targets, init_lora_weights=False))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batch-adapters")
    return (_adapter(tiny_model_dir, root / "a", 11, ["q_proj", "v_proj", "o_proj"]),
            _adapter(tiny_model_dir, root / "b", 12, ["k_proj", "up_proj", "down_proj"]))


@pytest.fixture(scope="module")
def variants(tiny_model_dir, adapters):
    from tuneterm.workers.variants import load_variants

    return load_variants([str(tiny_model_dir), str(adapters[0]), str(adapters[1])])


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _alone(variant, messages, params):
    """The variant's answer with nothing else in flight."""
    from tuneterm.core.generation import GenerationStats

    stats = GenerationStats()
    text = "".join(variant.stream(messages, params, stats))
    return text, stats


def test_variants_share_one_batcher_and_greedy_equals_generate(variants, tiny_model_dir, adapters):
    from peft import PeftModel

    from tuneterm.core.generation import GenerationParams
    from tuneterm.workers.engine import generate_text
    from tuneterm.workers.loading import load

    base, a, b = (variants[str(tiny_model_dir)], variants[str(adapters[0])], variants[str(adapters[1])])
    assert base.group is a.group is b.group
    params = GenerationParams(max_new_tokens=12)
    answers = [_alone(v, _user("hello there"), params)[0] for v in (base, a, b)]
    assert base.group.batcher is not None
    plain = load(str(tiny_model_dir))
    assert answers[0] == generate_text(plain.model, plain.tokenizer, _user("hello there"), params)[0]
    for adapter_dir, answer in zip(adapters, answers[1:]):
        fresh = load(str(tiny_model_dir))
        tuned = PeftModel.from_pretrained(fresh.model, adapter_dir).eval()
        assert answer == generate_text(tuned, fresh.tokenizer, _user("hello there"), params)[0]
    assert len(set(answers)) == 3  # three different models answered


def test_joining_mid_stream_with_own_settings(variants, tiny_model_dir, adapters):
    from tuneterm.core.generation import GenerationParams, GenerationStats

    base, a, b = (variants[str(tiny_model_dir)], variants[str(adapters[0])], variants[str(adapters[1])])
    jobs = [  # (variant, messages, params): different prompt lengths, adapters, sampling and ends
        (base, _user("hi"), GenerationParams(max_new_tokens=40)),
        (a, _user(LONG), GenerationParams(max_new_tokens=24)),
        (b, _user("what is 2+2?"), GenerationParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)),
        (a, _user("tell me a story"), GenerationParams(max_new_tokens=30)),
    ]
    solo = [_alone(v, m, p) for v, m, p in jobs]
    # a stop string taken from the last request's own answer ends it there
    stop = solo[3][0][6:9]
    jobs[3] = (a, jobs[3][1], GenerationParams(max_new_tokens=30, stop=[stop]))
    expected = [s[0] for s in solo[:3]] + [solo[3][0][: solo[3][0].index(stop)]]

    batcher = base.group.batcher
    steps_before, batcher.max_rows_seen = batcher.steps, 0
    streams = []
    stats = [GenerationStats() for _ in jobs]
    texts = [""] * len(jobs)
    # the first request starts; each next one joins after the previous one's first piece
    for i, (v, m, p) in enumerate(jobs):
        streams.append(v.stream(m, p, stats[i]))
        texts[i] += next(streams[i])
    for i, s in enumerate(streams):
        texts[i] += "".join(s)
    assert texts == expected
    assert [s.finish_reason for s in stats] == ["length", "length", "length", "stop"]
    assert [s.completion_tokens for s in stats[:3]] == [40, 24, 16]
    assert batcher.max_rows_seen >= 3  # they really were decoded together
    assert batcher.steps - steps_before < sum(p.max_new_tokens for _, _, p in jobs)


SYSTEM = ("You route support tickets to one of these queues: payments-ops, account-security, "
          "shipping-desk, tech-support, returns, billing-disputes. Answer with the queue name only.")


@pytest.mark.parametrize("shared_system", [False, True], ids=["different-prompts", "shared-system-prompt"])
def test_prompts_that_arrive_together_are_prefilled_in_one_pass(variants, tiny_model_dir, adapters, monkeypatch,
                                                                 shared_system):
    """While the loop is busy, four requests (three variants, different prompt lengths) queue up;
    they join in one prefill pass, left-padded, and each answer equals its variant's answer alone.
    With a long system prompt in common, its tokens are computed once per adapter, not per request."""
    import time

    from tuneterm.core.generation import GenerationParams

    def messages(text):
        return ([{"role": "system", "content": SYSTEM}] if shared_system else []) + _user(text)

    base, a, b = (variants[str(tiny_model_dir)], variants[str(adapters[0])], variants[str(adapters[1])])
    jobs = [(base, messages("hi")), (a, messages(LONG)), (b, messages("what is 2+2?")),
            (a, messages("tell me a story"))]
    params = GenerationParams(max_new_tokens=10)
    solo = [_alone(v, m, params)[0] for v, m in jobs]

    batcher = base.group.batcher
    forward, slow = batcher._forward, threading.Event()

    def busy_forward(rows, **inputs):  # the first request's passes take a while: the others queue meanwhile
        if slow.is_set() and len(rows) == 1:
            time.sleep(0.3)
        return forward(rows, **inputs)

    monkeypatch.setattr(batcher, "_forward", busy_forward)
    texts: list = [None] * (len(jobs) + 1)

    def run(i, variant, messages):
        texts[i] = "".join(variant.stream(messages, params))

    slow.set()
    first = threading.Thread(target=run, args=(len(jobs), base, _user("a first request")))
    first.start()
    while batcher.prefills == 0 or not batcher._rows:
        time.sleep(0.01)
    prefills_before, reused_before = batcher.prefills, batcher.prefix_reused
    threads = [threading.Thread(target=run, args=(i, v, m)) for i, (v, m) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join(60)
    assert texts[: len(jobs)] == solo
    assert batcher.prefills - prefills_before == 1  # the four joined in one pass
    reused = batcher.prefix_reused - reused_before
    if shared_system:  # four requests on three variants: the shared tokens computed 3 times, not 4
        assert reused >= len(base.group.tokenizer(SYSTEM)["input_ids"])


def test_a_stream_closed_early_leaves_the_others_intact(variants, tiny_model_dir, adapters):
    from tuneterm.core.generation import GenerationParams, GenerationStats

    base, a = variants[str(tiny_model_dir)], variants[str(adapters[0])]
    params = GenerationParams(max_new_tokens=20)
    want_a = _alone(a, _user("one two three"), params)[0]
    cancel = threading.Event()
    left_stats = GenerationStats()
    leaving = base.stream(_user("hello"), GenerationParams(max_new_tokens=200), left_stats, cancel=cancel)
    next(leaving)
    staying = a.stream(_user("one two three"), params)
    got = next(staying)
    cancel.set()  # the base's client went away
    got += "".join(staying)
    leaving.close()
    assert got == want_a
    assert left_stats.completion_tokens < 200
    # the batch is empty again afterwards, and a new request is served
    assert _alone(a, _user("one two three"), params)[0] == want_a


def test_fewshot_variant_shares_the_base(tiny_model_dir, adapters, tmp_path):
    import json

    from tuneterm.core import fewshot
    from tuneterm.core.chat_client import with_fewshot
    from tuneterm.core.generation import GenerationParams
    from tuneterm.workers.variants import load_variants

    pool = tmp_path / "pool.jsonl"
    rows = [{"messages": [{"role": "system", "content": "Route it."}, {"role": "user", "content": f"ticket {i}"},
                          {"role": "assistant", "content": f"queue-{i}"}]} for i in range(5)]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shot_ref = f"fewshot:2:seed=3:{pool}@{adapters[0]}"
    vs = load_variants([str(adapters[0]), shot_ref])
    plain, shots = vs[str(adapters[0])], vs[shot_ref]
    assert shots.group is plain.group and shots.adapter == plain.adapter and len(plain.group.adapters) == 1
    spec = fewshot.parse_spec(shot_ref)
    history = _user("first") + [{"role": "assistant", "content": "ok"}] + _user("ticket 9")
    sent = shots.prepare(history)
    assert sent == with_fewshot(spec, history)
    assert sent[0] == {"role": "system", "content": "Route it."}
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert sent[-3:] == history
    params = GenerationParams(max_new_tokens=8)
    assert _alone(shots, history, params)[0] == _alone(plain, sent, params)[0]



def test_a_model_with_the_lean_decode_loop_is_served_through_it(tiny_model_dir, adapters):
    """Quantized artifacts load with quantize.fastgen's lean loop as their generate: serve uses it."""
    from tuneterm.core.generation import GenerationParams
    from tuneterm.workers.engine import generate_text
    from tuneterm.workers.loading import load
    from tuneterm.workers.quantize import fastgen
    from tuneterm.workers.variants import load_variants

    merged = adapters[0].parent / "merged"  # a plain model that says more than the random base
    if not merged.exists():
        from peft import PeftModel

        fresh = load(str(tiny_model_dir))
        PeftModel.from_pretrained(fresh.model, adapters[0]).merge_and_unload().save_pretrained(merged)
        fresh.tokenizer.save_pretrained(merged)
    variant = load_variants([str(merged)])[str(merged)]
    assert fastgen.install(variant.group.model) and variant.group.lean_loop
    params = GenerationParams(max_new_tokens=10)
    text, stats = _alone(variant, _user("hello there"), params)
    assert variant.group.batcher is None and stats.completion_tokens == 10
    plain = load(str(merged))
    assert text == generate_text(plain.model, plain.tokenizer, _user("hello there"), params)[0]
    assert len(text.strip()) > 3


def test_row_scaled_lora_equals_peft_mixed_batch(variants, tiny_model_dir, adapters):
    """Base rows and two adapters' rows in one pass with per-row LoRA scales give the logits PEFT's
    own mixed batch (adapter_names) gives; afterwards every layer's scaling is its float again."""
    import torch

    from tuneterm.workers.row_lora import RowScaledLora

    model = variants[str(tiny_model_dir)].group.model
    names = [variants[str(a)].adapter for a in adapters]
    per_row = [None, names[0], names[1], names[0], None]
    ids = torch.randint(5, 200, (len(per_row), 9), generator=torch.Generator().manual_seed(3))
    rows = RowScaledLora(model)
    assert rows.handles(set(names)) and rows.layers
    before = [dict(layer.scaling) for layer in rows.layers]
    with torch.inference_mode():
        model.base_model.enable_adapter_layers()
        want = model(input_ids=ids, adapter_names=[a or "__base__" for a in per_row]).logits
        model.base_model.set_adapter(names, inference_mode=True)
        with rows.rows(per_row):
            got = model(input_ids=ids).logits
        model.base_model.disable_adapter_layers()
        base = model(input_ids=ids).logits
        model.base_model.enable_adapter_layers()
        model.set_adapter(names[0], inference_mode=True)
    assert [dict(layer.scaling) for layer in rows.layers] == before
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.allclose(got[[0, 4]], base[[0, 4]], atol=1e-5)  # the base rows: no adapter
    assert all(not torch.allclose(got[i], base[i], atol=1e-3) for i in (1, 2, 3))  # adapters change theirs
    assert not rows.handles({"a", "b", "c"})  # three adapters: PEFT's split
