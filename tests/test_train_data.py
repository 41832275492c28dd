"""Instruction-tuning data: the loss mask lines up with the SmolLM2 chat template's assistant spans."""

from __future__ import annotations

import pytest

from tuneterm.workers.train.data import IGNORE, ChatDataset, LengthGroupedEpochSampler, PadToLongest, tokenize_example

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
