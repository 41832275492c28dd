"""Eval scoring reuses the key/value cache of a prefix every prompt of a batch shares (a long system
prompt): generated texts and chosen answers are identical with and without the reuse, log-likelihoods
agree to float precision, and the reuse path really runs (one prefix pass per batch call, not per row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneterm.core.evals.spec import load_task
from tuneterm.core.evals.variants import parse_variants

SYSTEM = ("You route customer support tickets to exactly one queue and answer with its name only. "
          + " ".join(f"Rule {i}: queue q{i % 4} handles topic number {i} and nothing else." for i in range(12)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tasks(folder: Path, n: int = 7) -> list:
    with open(folder / "items.jsonl", "w") as fh:
        for i in range(n):
            msgs = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Ticket {i}: my parcel " + "is late " * (i % 4)},
                    {"role": "assistant", "content": "logistics" if i % 2 else "payments-ops"}]
            fh.write(json.dumps({"id": f"t{i}", "messages": msgs, "queues": ["payments-ops", "logistics", "other"],
                                 "answer": i % 2}) + "\n")
    (folder / "gen.yaml").write_text("name: gen\nversion: 1\ntype: generate\ndata: {path: items.jsonl}\n"
                                     "generation: {max_new_tokens: 5}\nextract: [strip]\nmetrics: [exact_match]\n")
    (folder / "choice.yaml").write_text("name: choice\nversion: 1\ntype: choice\ndata: {path: items.jsonl}\n"
                                        "prompt: {chat_template: true}\nchoices: queues\ntarget: '{{answer}}'\n"
                                        "metrics: [accuracy]\n")
    return [load_task(folder / "gen.yaml"), load_task(folder / "choice.yaml")]


def _same_with_and_without_reuse(tmp_path: Path, ref: str, monkeypatch, others: tuple = ()) -> dict:
    from tuneterm.workers.evals import prefix
    from tuneterm.workers.evals.runner import RunOptions, collect

    tasks = _tasks(tmp_path)
    laid = []
    real = prefix.PrefixCache.cache_for

    def counting(self, tokens, rows, device):
        laid.append((len(tokens), rows))
        return real(self, tokens, rows, device)

    monkeypatch.setattr(prefix.PrefixCache, "cache_for", counting)
    runs = {}
    for share in (True, False):
        variants = parse_variants([ref, *others])
        outcomes, _ = collect(tasks, variants, RunOptions(batch_size=3, use_cache=False, progress=False,
                                                          share_prefix=share))
        runs[share] = {(name, v): outcomes[name][v].records for name in ("gen", "choice") for v in (ref, *others)}
        if share:
            # batches of 3: generate 7 prompts (3 + 3 share a prefix; the last one alone does not),
            # choice 21 requests (7 batches of 3), every one of them after the system prompt
            assert [r for _, r in laid] == [3] * 9 * (1 + len(others))
            assert all(n >= prefix.MIN_PREFIX for n, _ in laid)
            laid.clear()
    assert not laid  # switched off: no prefix cache at all
    on, off = runs[True], runs[False]
    for v in (ref, *others):
        assert [r["output"] for r in on["gen", v]] == [r["output"] for r in off["gen", v]]
        for a, b in zip(on["choice", v], off["choice", v]):
            assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)
            assert max(range(3), key=lambda k: a["logprobs"][k]) == max(range(3), key=lambda k: b["logprobs"][k])
            assert a["greedy"] == b["greedy"]
    return on


def test_shared_prefix_reuse_is_exact_on_the_tiny_model_and_its_adapter(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    adapter = tmp_path / "lora"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
                   ).save_pretrained(adapter)
    base = str(tiny_model_dir)
    on = _same_with_and_without_reuse(tmp_path, base, monkeypatch, (str(adapter),))
    # one prefix cache per variant: the adapter's scores are its own, not the base's prefix reused
    assert [r["logprobs"] for r in on["choice", base]] != [r["logprobs"] for r in on["choice", str(adapter)]]


@pytest.mark.slow
def test_shared_prefix_reuse_is_exact_on_the_embedded_model(tmp_path, embedded_model_dir, monkeypatch):
    _same_with_and_without_reuse(tmp_path, str(embedded_model_dir), monkeypatch)


def test_shared_length_and_models_where_reuse_would_not_be_exact(tiny_arch):
    from transformers import AutoConfig

    from tuneterm.workers.evals.prefix import shared_length, usable

    assert shared_length([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert shared_length([[5, 1], [6, 1]]) == 0 and shared_length([]) == 0

    class Holder:
        def __init__(self, config):
            self.config = config

    assert usable(Holder(AutoConfig.from_pretrained(tiny_arch("llama"))))
    assert not usable(Holder(AutoConfig.from_pretrained(tiny_arch("gemma2"))))  # a sliding window
