"""Packed batches give each architecture's own attention: packed loss and gradients equal the
one-example-at-a-time ones on every fixture architecture (Gemma's 64-token sliding window and soft
caps included), with the collator the training job picks for that model."""

from __future__ import annotations

import pytest
import torch
from test_train_data import _packed_loss_and_grads, _unpacked_loss_and_grads
from tiny_archs import ARCHS, WINDOW

from tuneterm.workers.kinds.train import _collator
from tuneterm.workers.train.data import ChatDataset, PackedBatch


def _rows():
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    return [{"messages": [{"role": "system", "content": "Route each ticket to one queue."},
                          {"role": "user", "content": " ".join(words[(n + i) % 8] for i in range(n))},
                          {"role": "assistant", "content": ["payments-ops", "logistics " * 20][n % 2]}]}
            for n in (90, 7, 40, 120)]


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_loss_and_gradients_equal_unpacked(tiny_arch, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_arch(arch)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    items = ChatDataset(tokenizer, _rows(), max_length=512).items
    assert max(len(it["input_ids"]) for it in items) > WINDOW + 20  # the sliding window matters
    collate = _collator({"max_length": 512}, tokenizer, model)
    assert isinstance(collate, PackedBatch)
    batch = collate(items)
    assert batch["input_ids"].shape[1] > 2 * WINDOW
    want_loss, want_grads = _unpacked_loss_and_grads(model, items)
    got_loss, got_grads = _packed_loss_and_grads(model, batch)
    print(f"{arch}: packed {got_loss:.6f} unpacked {want_loss:.6f}")
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_a_hand_written_full_causal_mask_is_not_used_on_sliding_window_models(tiny_arch):
    """The shared-prefix mask ignores windows: the collator must not pick it for Gemma 2, and forcing it
    on a Gemma 2 batch longer than the window does change the loss (what the issue measured)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_arch("gemma2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    items = ChatDataset(tokenizer, _rows(), max_length=512).items
    assert _collator({}, tokenizer, model).share_prefix is False
    forced = PackedBatch(tokenizer.pad_token_id, share_prefix=True)(items)
    m = forced["attention_mask"]
    forced["attention_mask"] = torch.zeros(m.shape).masked_fill(~m, torch.finfo(torch.float32).min)
    want, _ = _unpacked_loss_and_grads(model, items)
    wrong, _ = _packed_loss_and_grads(model, forced)
    assert abs(wrong - want) > 1e-4
