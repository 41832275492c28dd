"""``train.max_length`` from the data (torch-free): the plan measures the training examples with the
model's own ``tokenizer.json`` (the ``tokenizers`` package; no torch, no transformers) and

- when the user did not set ``train.max_length``, sets it to what the longest example needs (plus
  room for the chat template), capped at :data:`AUTO_CAP` and the model's context length;
- reports, before a job exists, examples whose prompt alone fills ``max_length`` (with
  ``train.loss = "assistant"`` they would teach nothing), and refuses when that is all of them.

When no local tokenizer file is at hand (a model not converted yet, a Hub model), the recipe's value
stays and the plan says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.errors import DatasetError

AUTO_CAP = 2048  # tokens: what a training batch of the default size fits on a laptop or a small GPU
DEFAULT_SYSTEM_ROOM = 32  # tokens a chat template may add as its own system prompt when the data has none
PER_MESSAGE = 5  # role markers around each message (<|im_start|>role\n ... <|im_end|>\n)
REPLY_HEADER = 3  # the assistant header before the reply
SFT_METHODS = ("full", "freeze", "lora", "qlora")


@dataclass(frozen=True)
class Lengths:
    totals: list[int]
    prompts: list[int]
    context: int | None


def tokenizer_folder(model: str) -> Path | None:
    """The local folder with ``model``'s ``tokenizer.json``, without loading anything heavy."""
    from tuneterm.core import modelref
    from tuneterm.core.workspace import workspace

    ws = workspace()
    try:
        ref = modelref.parse(model)
        if ref.kind in ("embedded", "gguf"):
            gguf = modelref.embedded_gguf_path() if ref.kind == "embedded" else Path(ref.target)
            folder = modelref.gguf_cache_dir(gguf, ws.models_dir)
            return folder if modelref.is_converted(folder) else None
        if ref.kind == "dir":
            folder = Path(ref.target)
            if (folder / "tokenizer.json").is_file():
                return folder
            cfg = folder / "adapter_config.json"
            base = json.loads(cfg.read_text()).get("base_model_name_or_path") if cfg.is_file() else None
            return tokenizer_folder(base) if base else None
        if ref.kind == "job":
            art = modelref.job_artifact(ref.target, ws.jobs_dir)
            if (art.path / "tokenizer.json").is_file():
                return art.path
            return tokenizer_folder(art.base) if art.base else None
    except Exception:  # noqa: BLE001 - measuring is a convenience; the job reports real problems itself
        return None
    return None


def measure(folder: Path, path: Path) -> Lengths:
    """Token counts (whole example, and its prompt before the last assistant reply) of every row."""
    from tokenizers import Tokenizer

    from tuneterm.core.datasets.schemas import messages_of
    from tuneterm.core.jsonl import iter_jsonl

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    totals, prompts = [], []
    for _, row in iter_jsonl(path):
        msgs = messages_of(row)
        texts = [m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
                 for m in msgs]
        counts = [len(e.ids) + PER_MESSAGE for e in tok.encode_batch(texts, add_special_tokens=False)] if texts else []
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
        room = 0 if msgs and msgs[0].get("role") == "system" else DEFAULT_SYSTEM_ROOM
        totals.append(sum(counts) + room)
        prompts.append(sum(counts[:last]) + room + REPLY_HEADER)
    context = None
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
        context = int(value) if isinstance(value, int) and value > 0 else None
    except (OSError, ValueError):
        pass
    return Lengths(totals, prompts, context)


def fit_max_length(config: dict, model: str, train_file: Path, explicit: bool) -> tuple[str, ...]:
    """Set or check ``config["train"]["max_length"]`` for an SFT method; returns notes for the user."""
    train = config.get("train", {})
    if config.get("method") not in SFT_METHODS or "max_length" not in train:
        return ()
    folder = tokenizer_folder(model)
    if folder is None:
        return (f"train.max_length = {train['max_length']} (the recipe's; no local tokenizer to measure the data with)",)
    lengths = measure(folder, train_file)
    if not lengths.totals:
        return ()
    longest = max(lengths.totals)
    notes = []
    if not explicit:
        cap = min(AUTO_CAP, lengths.context or AUTO_CAP)
        train["max_length"] = max(32, min(cap, -(-(longest + 8) // 16) * 16))  # a little room, rounded up
        notes.append(f"train.max_length = {train['max_length']}: the longest example has about {longest} tokens"
                     + (f" (capped at {cap})" if longest > cap else ""))
    limit = train["max_length"]
    if train.get("loss", "assistant") == "assistant":
        empty = [i for i, p in enumerate(lengths.prompts) if p >= limit]
        if len(empty) == len(lengths.prompts):
            raise DatasetError("no example has trainable tokens after truncation",
                               [("file", str(train_file)), ("max_length", str(limit)),
                                ("shortest prompt", f"about {min(lengths.prompts)} tokens")],
                               f"raise train.max_length above {min(lengths.prompts)} (e.g. "
                               f"train.max_length={-(-max(lengths.totals) // 16) * 16})")
        if empty:
            notes.append(f"{len(empty)} of {len(lengths.prompts)} examples are cut before their answer at "
                         f"max_length {limit} and teach nothing (first: example {empty[0] + 1})")
    return tuple(notes)


def fit_text_length(config: dict, model: str, train_file: Path, explicit: bool) -> tuple[str, ...]:
    """``train.max_length`` of a classification head (``cls_head``): the head reads only each example's
    last user message, so the longest such text sets it (no system prompt, no chat template). Refuses
    data with fewer than two labels; returns notes for the user."""
    from tuneterm.core.datasets.labels import read_labelled

    texts, labels = read_labelled(train_file)
    kinds = sorted(set(labels))
    if len(kinds) < 2:
        raise DatasetError("a classification head needs at least two labels",
                           [("file", str(train_file)), ("labels", ", ".join(kinds) or "none")],
                           "the label of an example is its last assistant message")
    notes = [f"{len(kinds)} labels; the head reads each example's last user message"]
    train = config["train"]
    folder = tokenizer_folder(model)
    if folder is None:
        return tuple(notes) + (f"train.max_length = {train['max_length']} (the recipe's; no local tokenizer to "
                               "measure the data with)",)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    longest = max(len(e.ids) for e in tok.encode_batch(texts))
    if not explicit:
        context = None
        try:
            value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
            context = int(value) if isinstance(value, int) and value > 0 else None
        except (OSError, ValueError):
            pass
        cap = min(AUTO_CAP, context or AUTO_CAP)
        train["max_length"] = max(16, min(cap, -(-(longest + 2) // 16) * 16))
        notes.append(f"train.max_length = {train['max_length']}: the longest text has {longest} tokens"
                     + (f" (capped at {cap})" if longest > cap else ""))
    elif longest > train["max_length"]:
        notes.append(f"texts longer than train.max_length = {train['max_length']} are cut (the longest has "
                     f"{longest} tokens)")
    return tuple(notes)
