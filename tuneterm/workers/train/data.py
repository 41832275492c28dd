"""Training data: canonical chat JSONL -> token ids and labels, batches with little padding.

Instruction tuning masks everything but the assistant's replies by default: the chat template
is rendered once per assistant turn to find where each reply starts and ends (character
spans), and the tokenizer's offsets turn those spans into a label mask. Assistant messages
with ``weight: 0`` stay masked. ``loss = "all"`` trains on every token instead.

Batches are padded to their own longest row, and rows of similar length are grouped together
(seeded per epoch, so a resumed run sees the same order), which removes most padding work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from tuneterm.core.errors import DatasetError

IGNORE = -100


def read_examples(path: str | Path) -> list[dict]:
    """Rows of a canonical chat JSONL file (``{"messages": [...]}`` per line)."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row["messages"]
                if not isinstance(messages, list) or not messages:
                    raise ValueError("'messages' must be a non-empty list")
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path.name} line {number}: not a chat example",
                                   [("file", str(path)), ("line", str(number)), ("problem", str(exc))],
                                   "run `tuneterm data validate` on it first") from exc
            rows.append(row)
    if not rows:
        raise DatasetError("the training file has no examples", [("file", str(path))])
    return rows


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools=None) -> str:
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **kwargs)


def assistant_spans(tokenizer, messages: list[dict], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant replies that carry loss."""
    full = _render(tokenizer, messages, tools=tools)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools) if i else ""
        upto = _render(tokenizer, messages[: i + 1], tools=tools)
        if not full.startswith(upto) or not upto.startswith(prefix):
            raise DatasetError("the chat template does not render conversations prefix by prefix",
                               hint="use train.loss=all with this model")
        end = len(upto.rstrip("\n"))  # the reply and its end-of-turn token, not the newline after it
        spans.append((len(prefix), end))
    return full, spans


def tokenize_example(tokenizer, row: dict, max_length: int, loss: str = "assistant") -> dict | None:
    """``input_ids`` and ``labels`` (IGNORE where masked); None when nothing trainable is left."""
    text, spans = assistant_spans(tokenizer, row["messages"], row.get("tools"))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                    truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    if loss == "all":
        labels = list(ids)
    else:
        labels = [IGNORE] * len(ids)
        for t, (start, end) in enumerate(enc["offset_mapping"]):
            if end > start and any(s <= start < e for s, e in spans):
                labels[t] = ids[t]
    if all(label == IGNORE for label in labels[1:]):
        return None
    return {"input_ids": ids, "labels": labels}


class ChatDataset(Dataset):
    """Tokenized examples in memory (fine-tuning sets are small); ``lengths`` feeds the sampler."""

    def __init__(self, tokenizer, rows: list[dict], max_length: int, loss: str = "assistant"):
        self.items = []
        self.dropped = 0
        for row in rows:
            item = tokenize_example(tokenizer, row, max_length, loss)
            if item is None:
                self.dropped += 1
            else:
                self.items.append(item)
        if not self.items:
            raise DatasetError("no example has trainable tokens after masking and truncation",
                               [("examples", str(len(rows))), ("max_length", str(max_length))],
                               "raise train.max_length, or check that examples have assistant replies")
        self.lengths = [len(item["input_ids"]) for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    @property
    def n_tokens(self) -> int:
        return sum(self.lengths)


@dataclass
class PadToLongest:
    """Right-pads a batch to its own longest row; labels padded with IGNORE."""

    pad_id: int

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"])
            labels[row, :n] = torch.tensor(it["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LengthGroupedEpochSampler(Sampler):
    """Shuffles, then groups rows of similar length into batches; the order depends only on
    (seed, epoch), so a run resumed mid-epoch replays exactly the same batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, grouped: bool = True):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.grouped = grouped
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.grouped:
            return iter(order)
        mega = self.batch_size * 16
        out: list[int] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches = [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
            perm = torch.randperm(len(batches), generator=g).tolist()
            for b in perm:
                out.extend(batches[b])
        return iter(out)
