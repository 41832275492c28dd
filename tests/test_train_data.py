"""Instruction-tuning data: the loss mask lines up with the SmolLM2 chat template's assistant spans, and
padding-free packed batches give exactly the unpacked loss and gradients."""

from __future__ import annotations

import pytest
import torch

from tuneterm.workers.train.data import (IGNORE, ChatDataset, LengthGroupedEpochSampler, PackedBatch, PadToLongest,
                                         common_prefix, tokenize_example)

CONVO = {"messages": [
    {"role": "system", "content": "Route tickets."},
    {"role": "user", "content": "My card was charged twice."},
    {"role": "assistant", "content": "payments-ops"},
    {"role": "user", "content": "And I cannot log in."},
    {"role": "assistant", "content": "identity-team", "weight": 0},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "logistics"},
]}


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def _labelled_runs(item, tokenizer) -> list[str]:
    """Decoded runs of consecutive labelled tokens."""
    runs, current = [], []
    for tok, lab in zip(item["input_ids"], item["labels"]):
        if lab != IGNORE:
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_mask_is_exactly_the_weighted_assistant_replies(tokenizer):
    item = tokenize_example(tokenizer, CONVO, max_length=512)
    text = tokenizer.apply_chat_template(CONVO["messages"], tokenize=False)
    assert tokenizer.decode(item["input_ids"]) == text  # the template, tokenized as is
    # Each trained run is one assistant reply plus its end-of-turn token; the weight-0 reply is masked.
    assert _labelled_runs(item, tokenizer) == ["payments-ops<|im_end|>", "logistics<|im_end|>"]
    # and the labels equal the ids where they are set (no shift here: the model shifts)
    assert all(lab in (IGNORE, tok) for tok, lab in zip(item["input_ids"], item["labels"]))


def test_mask_matches_the_template_rendered_with_generation_prompt(tokenizer):
    """The tokens before each reply are exactly the template's prompt with add_generation_prompt."""
    msgs = CONVO["messages"][:3]
    item = tokenize_example(tokenizer, {"messages": msgs}, max_length=512)
    prompt = tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    first = next(i for i, lab in enumerate(item["labels"]) if lab != IGNORE)
    assert first == n_prompt
    assert item["labels"][: n_prompt] == [IGNORE] * n_prompt


def test_full_sequence_switch_and_truncation(tokenizer):
    item = tokenize_example(tokenizer, CONVO, max_length=512, loss="all")
    assert item["labels"] == item["input_ids"]
    short = tokenize_example(tokenizer, CONVO, max_length=12)
    assert short is None  # nothing trainable left after cutting to 12 tokens
    ds = ChatDataset(tokenizer, [CONVO, CONVO], max_length=12, loss="all")
    assert len(ds) == 2 and ds.lengths == [12, 12]


def test_batches_pad_to_their_longest_row_and_group_by_length(tokenizer):
    rows = [{"messages": [{"role": "user", "content": "word " * n}, {"role": "assistant", "content": "ok"}]}
            for n in range(1, 65)]
    ds = ChatDataset(tokenizer, rows, max_length=256)
    batch = PadToLongest(tokenizer.pad_token_id)([ds[0], ds[10]])
    assert batch["input_ids"].shape == (2, ds.lengths[10])
    assert int(batch["attention_mask"].sum()) == ds.lengths[0] + ds.lengths[10]
    assert (batch["labels"][0, ds.lengths[0]:] == IGNORE).all()

    def padding(order, bs=8):
        waste = 0
        for i in range(0, len(order), bs):
            lens = [ds.lengths[j] for j in order[i:i + bs]]
            waste += max(lens) * len(lens) - sum(lens)
        return waste

    grouped = LengthGroupedEpochSampler(ds.lengths, 8, seed=1)
    plain = LengthGroupedEpochSampler(ds.lengths, 8, seed=1, grouped=False)
    assert sorted(grouped) == list(range(64))
    assert padding(list(grouped)) < padding(list(plain)) / 4
    # the order depends on (seed, epoch) only: a resumed run replays it
    grouped.set_epoch(3)
    again = LengthGroupedEpochSampler(ds.lengths, 8, seed=1)
    again.set_epoch(3)
    assert list(grouped) == list(again)
    again.set_epoch(4)
    assert list(grouped) != list(again)


def _unpacked_loss_and_grads(model, items):
    """Reference: each example alone, no padding, summed token losses over the batch's token count."""
    import torch.nn.functional as F

    model.zero_grad()
    total, count = 0.0, 0
    for it in items:
        ids = torch.tensor([it["input_ids"]])
        logits = model(input_ids=ids).logits[0, :-1]
        target = torch.tensor(it["labels"][1:])
        keep = target != IGNORE
        total = total + F.cross_entropy(logits[keep].float(), target[keep], reduction="sum")
        count += int(keep.sum())
    loss = total / count
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _packed_loss_and_grads(model, batch):
    import torch.nn.functional as F

    model.zero_grad()
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                attention_mask=batch.get("attention_mask"), logits_to_keep=batch["keep"], use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1])[batch["take"]]
    loss = F.cross_entropy(logits.float(), batch["labels"])
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("loss", ["assistant", "all"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_loss_and_gradients_equal_unpacked(tiny_model_dir, tokenizer, share_prefix, loss, attn):
    """Padding-free packing (one row, block-diagonal causal mask, positions restarting per example,
    the shared system prompt computed once) gives the unpacked loss and gradients on the tiny model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn)
    rows = [{"messages": [{"role": "system", "content": "Route tickets to a queue."},
                          {"role": "user", "content": "word " * n},
                          {"role": "assistant", "content": ["payments-ops", "logistics"][n % 2]}]}
            for n in (3, 9, 5, 1)]
    items = ChatDataset(tokenizer, rows, max_length=256, loss=loss).items
    collate = PackedBatch(tokenizer.pad_token_id, share_prefix=share_prefix)
    batch = collate(items)
    prefix = common_prefix([it["input_ids"] for it in items])
    assert prefix > 10  # the system prompt and the user header
    width = sum(len(it["input_ids"]) for it in items) - (3 * prefix if share_prefix else 0)
    assert batch["input_ids"].shape == (1, width)  # one row, no padding
    assert int(batch["n_tokens"]) == sum(len(it["input_ids"]) for it in items)
    assert ("attention_mask" in batch) == share_prefix  # without a shared prefix the model builds the mask
    if attn == "eager" and share_prefix:  # eager attention adds the mask: the trainer turns it additive the same way
        m = batch["attention_mask"]
        batch["attention_mask"] = torch.zeros(m.shape).masked_fill(~m, torch.finfo(torch.float32).min)
    want_loss, want_grads = _unpacked_loss_and_grads(model, items)
    got_loss, got_grads = _packed_loss_and_grads(model, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_batch_splits_long_batches_into_padded_rows(tokenizer):
    rows = [{"messages": [{"role": "user", "content": f"{i} " + "word " * 30},
                          {"role": "assistant", "content": "ok"}]} for i in range(6)]
    items = ChatDataset(tokenizer, rows, max_length=256).items
    cap = 2 * max(len(it["input_ids"]) for it in items)  # two examples per row
    batch = PackedBatch(tokenizer.pad_token_id, share_prefix=False, row_tokens=cap)(items)
    n_rows, width = batch["input_ids"].shape
    assert n_rows == 3 and width <= cap
    assert "attention_mask" not in batch  # the model derives each example's mask from the position ids
    for r in range(n_rows):  # positions restart at 0 for every example; pads are lone positions 0
        starts = (batch["position_ids"][r] == 0).nonzero().flatten().tolist()
        assert starts[0] == 0 and len(starts) >= 2
    assert int(batch["keep"].sum()) == batch["take"].numel() == batch["labels"].numel()
