"""A sequence-classification head over a causal LM: the model reads a text and a linear layer (``score``)
on its last non-pad token's hidden state picks one of the labels, trained with cross-entropy over the
labels (``AutoModelForSequenceClassification``), with LoRA on the backbone (PEFT ``task_type=SEQ_CLS``,
which trains the head in full as a module to save) or every weight.

The job kind ``cls_head`` (``tuneterm.workers.kinds.cls_head``) trains it. The artifact is of kind
``classifier`` with ``head = "cls_head"``: ``output/head/`` holds the adapter (or the full model), the
tokenizer and :data:`HEAD_FILE` (labels, how it was tuned, the base). :class:`HeadClassifier` loads
it and turns texts into labels, for ``tuneterm chat`` and the eval harness alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tuneterm.core.errors import ModelLoadError
from tuneterm.workers import loading

HEAD_DIR = "head"
HEAD_FILE = "head.json"


# --- data ----------------------------------------------------------------------------------------


class TextDataset(torch.utils.data.Dataset):
    """Tokenized texts (cut at ``max_length``) and their label indexes; ``lengths`` for length grouping."""

    def __init__(self, tokenizer, texts: list[str], targets: list[int], max_length: int) -> None:
        ids = tokenizer(list(texts), truncation=False)["input_ids"]
        self.truncated = sum(1 for row in ids if len(row) > max_length)
        self.ids = [row[:max_length] for row in ids]
        self.targets = list(targets)
        self.lengths = [len(row) for row in self.ids]
        self.n_tokens = sum(self.lengths)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.targets[i]}


class PadTexts:
    """Rows padded on the right to the batch's longest; the head reads each row's last non-pad token."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r["input_ids"])] = torch.tensor(r["input_ids"], dtype=torch.long)
            mask[j, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long)}


# --- model ---------------------------------------------------------------------------------------


def load_head_model(path: Path, labels: list[str], pad_id: int, dtype: torch.dtype = torch.float32,
                    device_map: Any = None):
    """``path``'s backbone with a classification head over ``labels`` (a fresh head for a causal LM)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, dtype=dtype,
            **({"device_map": device_map} if device_map is not None else {}))
    except ValueError as exc:  # an architecture transformers has no sequence-classification class for
        raise ModelLoadError("this model has no sequence-classification head in transformers",
                             [("model", str(path)), ("problem", str(exc)[:300])],
                             "use --method feature (a classifier on frozen hidden states) or lora") from exc
    model.config.pad_token_id = pad_id  # the head reads the last token that is not padding
    return model


def prepare(config: dict, base_path: Path, labels: list[str], pad_id: int, local_rank: int = 0):
    """The model to train: LoRA adapters on the backbone and a trained head (``head.tune = "lora"``),
    or every weight (``"full"``)."""
    from tuneterm.workers.device import training_device_map
    from tuneterm.workers.train.methods import upcast_trainable, weights_dtype

    tune = config.get("head", {}).get("tune", "lora")
    dtype = weights_dtype(config) if tune == "lora" else torch.float32
    model = load_head_model(base_path, labels, pad_id, dtype, training_device_map(local_rank))
    if tune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    lo = config.get("lora", {})
    peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=int(lo.get("r", 16)), lora_alpha=int(lo.get("alpha", 32)),
                             lora_dropout=float(lo.get("dropout", 0.05)),
                             target_modules=lo.get("target_modules", "all-linear"))
    model = get_peft_model(model, peft_config)  # SEQ_CLS: the head ("score") is trained in full and saved
    upcast_trainable(model)
    return model


@torch.no_grad()
def predict_with(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 16) -> list[int]:
    """Label indexes for ``texts`` (longest first in each batch, right-padded, as in training)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = PadTexts(pad_id)
    ids = [row[:max_length] for row in tokenizer(list(texts), truncation=False)["input_ids"]]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = [0] * len(ids)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([{"input_ids": ids[i], "labels": 0} for i in idx])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        for i, k in zip(idx, logits.argmax(-1).tolist()):
            out[i] = int(k)
    if was_training:
        model.train()
    return out


# --- the artifact ----------------------------------------------------------------------------------


def is_head(folder: Path) -> bool:
    return (Path(folder) / HEAD_FILE).is_file()


class HeadClassifier:
    """A trained head, loaded from its ``output/head/`` folder: ``predict(texts) -> labels``."""

    def __init__(self, folder: str | Path, dtype: str | None = None, device: str | None = None) -> None:
        from transformers import AutoTokenizer

        from tuneterm.workers.device import inference_device_map, resolve_device, resolve_dtype

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / HEAD_FILE).read_text())
        self.labels = [str(x) for x in self.meta["labels"]]
        self.max_length = int(self.meta.get("max_length", 512))
        device = resolve_device(device)
        placed = inference_device_map(device) if device.startswith("cuda") else None
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        pad_id = self.tokenizer.pad_token_id
        try:
            if self.meta.get("tune") == "full":
                model = load_head_model(self.folder, self.labels, pad_id, resolve_dtype(dtype, device), placed)
            else:
                from peft import PeftModel

                base_path, _ = loading.local_path(str(self.meta["base"]))
                base = load_head_model(base_path, self.labels, pad_id, resolve_dtype(dtype, device), placed)
                model = PeftModel.from_pretrained(base, self.folder)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError("could not load the classification head",
                                 [("folder", str(self.folder)), ("problem", f"{type(exc).__name__}: {str(exc)[:300]}")],
                                 "check that the base model it was trained on is still available") from exc
        if placed is None and device != "cpu":
            model.to(device)
        self.model = model.eval()

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        picked = predict_with(self.model, self.tokenizer, list(texts), self.max_length, batch_size)
        return [self.labels[k] for k in picked]
