"""Training data: canonical chat JSONL -> token ids and labels, batches with little padding.

Instruction tuning masks everything but the assistant's replies by default: the character spans of
the replies in the rendered conversation (:mod:`tuneterm.core.chat_templates`) and the tokenizer's
offsets give the label mask. Assistant messages
with ``weight: 0`` stay masked. ``loss = "all"`` trains on every token instead.

Two ways to batch. :class:`PackedBatch` (the default) is padding-free: the examples of a batch are
laid end to end in one row with position ids restarting per example and no attention mask, so the
model builds its own mask from the position ids (each layer's causal, sliding-window or chunked
pattern, confined to each example; flash attention's variable-length path on CUDA). On models whose
every layer attends to the full causal past (:func:`exact_prefix_sharing`), a prefix that every
example of the batch shares (a system prompt) is laid down and computed once instead, with an
explicit block-diagonal mask, the examples attending to it as if it were their own. Either way the
loss is exactly the unpacked one. :class:`PadToLongest` pads each row to the batch's
longest. Either way rows of similar length are grouped (seeded per epoch, so a resumed run sees
the same order).
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


def assistant_spans(tokenizer, messages: list[dict], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant replies that carry loss
    (:func:`tuneterm.core.chat_templates.assistant_spans`); a template error becomes a DatasetError."""
    from tuneterm.core import chat_templates

    try:
        return chat_templates.assistant_spans(tokenizer, messages, tools)
    except chat_templates.TemplateRenderError as exc:
        raise DatasetError("the model's chat template cannot render this conversation", [("problem", str(exc))],
                           "run `tuneterm data validate --model MODEL` to see which rows, or use train.loss=all") from exc


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


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the token prefix every row shares (0 for no rows); training and eval batches both use it."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def _balanced_rows(sizes: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``sizes`` split into as few rows of at most ``capacity`` as a greedy fill finds, the
    rows kept even (longest first into the emptiest row that fits), so the padding to the widest is small."""
    n_rows = max(1, -(-sum(sizes) // max(1, capacity)))
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    loads = [0] * n_rows
    for i in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        r = min(range(len(rows)), key=lambda j: loads[j])
        if loads[r] and loads[r] + sizes[i] > capacity:
            rows.append([])
            loads.append(0)
            r = len(rows) - 1
        rows[r].append(i)
        loads[r] += sizes[i]
    return [sorted(row) for row in rows if row]


@dataclass
class PackedBatch:
    """Padding-free batches: one row holding ``[shared prefix][example 1 rest][example 2 rest]...``.

    Returns ``input_ids``/``position_ids`` of shape (rows, T); with a shared prefix a boolean
    ``attention_mask`` of shape (rows, 1, T, T) (True = may attend), without one no mask (the model
    derives it from the restarting position ids); ``keep`` (rows, T): the positions whose hidden state
    predicts a trained token, ``take`` (K,): for each trained token, its index among the kept
    positions (a shared prefix position can predict for several examples), ``labels``/``shift_labels``
    (K,): the trained tokens, and ``n_tokens``: the examples' tokens (prefix counted per example).
    A row holds at most ``row_tokens`` tokens (longer batches become several even rows, padded; an
    example longer than that gets a row of its own).
    """

    pad_id: int
    share_prefix: bool = True
    row_tokens: int = 512

    def __call__(self, items: list[dict]) -> dict:
        ids_list = [it["input_ids"] for it in items]
        shared = common_prefix(ids_list) if self.share_prefix and len(items) > 1 else 0
        prefix = ids_list[0][:shared]
        rows = _balanced_rows([len(ids) - shared for ids in ids_list], self.row_tokens - shared)
        width = max(shared + sum(len(ids_list[i]) - shared for i in row) for row in rows)
        n_rows = len(rows)
        input_ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((n_rows, width), dtype=torch.long)
        segment = torch.full((n_rows, width), -2, dtype=torch.long)  # -1 prefix, i example i, -2 pad
        keep = torch.zeros((n_rows, width), dtype=torch.bool)
        sources: list[tuple[int, int]] = []  # (row, position) of the hidden state predicting each target
        targets: list[int] = []
        for r, members in enumerate(rows):
            input_ids[r, :shared] = torch.tensor(prefix, dtype=torch.long)
            position_ids[r, :shared] = torch.arange(shared)
            segment[r, :shared] = -1
            at = shared
            for i in members:
                ids, labels = ids_list[i], items[i]["labels"]
                rest = len(ids) - shared
                input_ids[r, at : at + rest] = torch.tensor(ids[shared:], dtype=torch.long)
                position_ids[r, at : at + rest] = torch.arange(shared, len(ids))
                segment[r, at : at + rest] = i
                for t in range(1, len(ids)):
                    if labels[t] != IGNORE:
                        src = t - 1 if t - 1 < shared else at + (t - 1 - shared)
                        sources.append((r, src))
                        targets.append(labels[t])
                at += rest
        for r, src in sources:
            keep[r, src] = True
        flat = keep.flatten().cumsum(0) - 1  # index of each kept position in row-major order
        take = torch.tensor([int(flat[r * width + src]) for r, src in sources], dtype=torch.long)
        mask = None
        if shared:
            q, k = segment[:, :, None], segment[:, None, :]
            causal = torch.ones((width, width), dtype=torch.bool).tril()
            mask = causal & ((q == k) & (q != -2) | (k == -1))
            mask |= torch.eye(width, dtype=torch.bool) & (q == -2)  # pads attend to themselves (no NaN rows)
        target = torch.tensor(targets, dtype=torch.long)
        batch = {"input_ids": input_ids, "position_ids": position_ids,
                 "keep": keep, "take": take, "labels": target, "shift_labels": target,
                 "n_tokens": torch.tensor(sum(len(ids) for ids in ids_list))}
        if shared:
            batch["attention_mask"] = mask[:, None]
        return batch


def exact_prefix_sharing(config, attn_implementation: str | None = None) -> bool:
    """Whether a shared prefix laid down once with an explicit causal mask is exactly what the model
    computes: every layer attends to the full causal past (no sliding window, no chunked attention)
    and the attention kernel takes an explicit mask."""
    attn = attn_implementation or getattr(config, "_attn_implementation", None) or "sdpa"
    if attn not in ("sdpa", "eager") or getattr(config, "attention_chunk_size", None):
        return False
    types = getattr(config, "layer_types", None)
    if types:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None


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
