"""Feature-based fine-tuning: a classic classifier on a frozen model's hidden states.

The hidden states of one layer (mean-pooled over the prompt tokens, or the last token) are
extracted once per (model content, layer, pooling, dataset content) and cached under
``<workspace>/features/``; a scikit-learn ``LogisticRegression`` is trained on them. The label of
a chat example is its last assistant message; the text is the last user message.

The job kind ``feature`` (``tuneterm.workers.kinds.feature``) calls :func:`train_classifier`. The artifact kind is
``classifier``: ``output/classifier.pkl`` + ``output/artifact.json`` (``base`` = the model ref,
``layer``, ``pooling``). :class:`Classifier` turns texts into labels with a saved classifier (a feature
classifier or a classification head); :func:`predict` is its one-call form.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneterm.core.datasets.labels import read_labelled
from tuneterm.core.errors import InputError
from tuneterm.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_file
from tuneterm.core.workspace import workspace
from tuneterm.workers import loading

CLASSIFIER_FILE = "classifier.pkl"
MAX_TEXT_TOKENS = 256  # a feature classifier reads this many tokens of a text


# --- data ------------------------------------------------------------------------------------


def _resolve(dataset: str, split: str | None) -> Path:
    p = Path(dataset)
    if p.is_file():
        if split not in (None, "train"):  # a single file is the training data only
            raise FileNotFoundError(f"{dataset} has no {split} split")
        return p
    if p.is_dir() and split and (p / f"{split}.jsonl").is_file():
        return p / f"{split}.jsonl"
    from tuneterm.core.datasets import store

    return store.resolve_path(dataset, split)


def model_hash(folder: Path) -> str:
    """Content hash of a model folder (config + weights)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


# --- features --------------------------------------------------------------------------------


@torch.no_grad()
def embed(loaded, texts: list[str], layer: int = -1, pooling: str = "mean",
          batch_size: int = 16, max_length: int = MAX_TEXT_TOKENS, progress=None) -> np.ndarray:
    """Hidden states of ``layer`` (index into ``hidden_states``; -1 = last) pooled per text;
    ``progress(done, total)`` after each batch."""
    if pooling not in ("mean", "last"):
        raise InputError("pooling must be mean or last", [("pooling", pooling)])
    tok, model = loaded.tokenizer, loaded.model
    tok.padding_side = "right"
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tok(texts[i:i + batch_size], return_tensors="pt", padding=True,
                    truncation=True, max_length=max_length)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        hs = model(**batch, output_hidden_states=True).hidden_states[layer].float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        if pooling == "mean":
            vec = (hs * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            last = batch["attention_mask"].sum(1) - 1
            vec = hs[torch.arange(hs.shape[0]), last]
        out.append(vec.cpu().numpy())
        if progress is not None:
            progress(min(i + batch_size, len(texts)), len(texts))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def progress_lines(log, what: str, every_s: float = 5.0):
    """``report(done, total)`` that logs ``what: done/total texts, ETA ...`` after the first batch, then at
    most every ``every_s`` seconds, and at the end: a long extraction is never silent."""
    import time

    from tuneterm.core.jobs.eta import format_duration

    started = time.perf_counter()
    last: list[float | None] = [None]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if last[0] is not None and done < total and now - last[0] < every_s:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        eta = f", ETA {format_duration((total - done) / rate)}" if done < total else ""
        log(f"{what}: {done}/{total} texts{eta}")

    return report


def cached_features(loaded, path: Path, layer: int, pooling: str, cache_dir: Path | None = None,
                    log=print) -> tuple[np.ndarray, list[str]]:
    texts, labels = read_labelled(path)
    cache_dir = cache_dir or workspace().root / "features"
    key = f"{model_hash(Path(loaded.path))}-L{layer}-{pooling}-{sha256_file(path)[:16]}"
    target = cache_dir / f"{key}.npy"
    if target.is_file():
        log(f"features from cache {target.name}")
        return np.load(target), labels
    feats = embed(loaded, texts, layer, pooling, progress=progress_lines(log, f"extracting features of {path.name}"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(target)
    log(f"extracted {len(texts)} feature vectors -> {target.name}")
    return feats, labels


# --- training and prediction -----------------------------------------------------------------


def train_classifier(model: str, dataset: str, output_dir: Path, layer: int = -1,
                     pooling: str = "mean", c: float = 1.0, seed: int = 0,
                     event=None, log=print) -> dict:
    """Fit the classifier on the train split, score val/test, save it; return the metrics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    event = event or (lambda **_: None)
    loaded = loading.load(model)
    x, y = cached_features(loaded, _resolve(dataset, "train"), layer, pooling, log=log)
    if len(set(y)) < 2:
        raise InputError("a classifier needs at least two labels", [("dataset", dataset)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    clf.fit(x, y)
    metrics = {"train_accuracy": float(clf.score(x, y)), "n_train": len(y),
               "labels": sorted(set(y)), "chance": max(y.count(v) for v in set(y)) / len(y)}
    for split in ("val", "test"):
        try:
            p = _resolve(dataset, split)
        except Exception:
            continue
        xs, ys = cached_features(loaded, p, layer, pooling, log=log)
        metrics[f"{split}_accuracy"] = float(clf.score(xs, ys))
        metrics[f"n_{split}"] = len(ys)
    event(type="metrics", **{k: v for k, v in metrics.items() if k != "labels"})
    output_dir.mkdir(parents=True, exist_ok=True)
    blob = {"classifier": clf, "model": model, "layer": layer, "pooling": pooling}
    atomic_write_bytes(output_dir / CLASSIFIER_FILE, pickle.dumps(blob))
    atomic_write_json(output_dir / "metrics.json", metrics)
    log(" ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("accuracy")))
    return metrics


_LOADED: dict[str, Any] = {}  # backbone ref -> its loaded model, for predict()


def load_classifier(path: str | Path, dtype: str | None = None, device: str | None = None) -> dict:
    """A saved classifier (``output/`` folder, the .pkl, or a ``job:ID`` ref): the pickled dict of a
    feature classifier, or ``{"head": HeadClassifier}`` for a classification head's folder."""
    p = str(path)
    if p.startswith("job:"):
        from tuneterm.core import modelref

        art = modelref.job_artifact(p[4:], workspace().jobs_dir)
        p = str(Path(art.path))
    f = Path(p)
    if f.is_dir():
        from tuneterm.workers.cls_head import HeadClassifier, is_head

        if is_head(f):  # a classification head (job kind cls_head): it reads the texts itself
            return {"head": HeadClassifier(f, dtype=dtype, device=device)}
        f = f / CLASSIFIER_FILE
    with open(f, "rb") as fh:
        return pickle.load(fh)


class Classifier:
    """A loaded classifier artifact and the one way it turns texts into labels, for ``tuneterm chat``,
    ``tuneterm serve`` (:class:`tuneterm.workers.served_classifier.ServedClassifier`) and the eval harness
    (``LocalGroup.classify``) alike.

    ``blob`` is what :func:`load_classifier` returns. A classification head reads the texts itself; a
    feature classifier pools the hidden states of ``backbone`` (anything with ``model`` and
    ``tokenizer``: a loaded model, or an eval group that already holds the base)."""

    def __init__(self, blob: dict, backbone: Any = None) -> None:
        if "head" not in blob and backbone is None:
            raise ValueError("a feature classifier needs the backbone it reads hidden states from")
        self.blob = blob
        self.backbone = backbone

    @property
    def head(self) -> Any:
        return self.blob.get("head")

    @property
    def method(self) -> str:
        return "cls_head" if self.head is not None else "feature"

    @property
    def labels(self) -> list[str]:
        if self.head is not None:
            return list(self.head.labels)
        return [str(c) for c in getattr(self.blob["classifier"], "classes_", [])]

    @property
    def tokenizer(self) -> Any:
        return self.head.tokenizer if self.head is not None else self.backbone.tokenizer

    @property
    def max_length(self) -> int:
        """The most tokens of a text it reads."""
        return int(self.head.max_length) if self.head is not None else MAX_TEXT_TOKENS

    @property
    def model(self) -> Any:
        """The torch model that reads the texts (the head's model, or the backbone)."""
        return self.head.model if self.head is not None else self.backbone.model

    def describe(self) -> str:
        """``cls_head, 7 labels``, ``feature, layer 12, 7 labels`` or ``feature, last layer, 7 labels``."""
        n = f"{len(self.labels)} labels"
        if self.head is not None:
            return f"cls_head, {n}"
        layer = int(self.blob.get("layer", -1))
        return f"feature, {'last layer' if layer == -1 else f'layer {layer}'}, {n}"

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        if self.head is not None:
            return self.head.predict(list(texts), batch_size)
        feats = embed(self.backbone, list(texts), self.blob["layer"], self.blob["pooling"], batch_size=batch_size)
        return [str(v) for v in self.blob["classifier"].predict(feats)]


def open_classifier(path: str | Path, dtype: str | None = None, device: str | None = None) -> Classifier:
    """The classifier at ``path`` (folder, .pkl or job:ID) with its own copy of a feature classifier's backbone."""
    blob = load_classifier(path, dtype, device)
    backbone = None if "head" in blob else loading.load(blob["model"], dtype=dtype, device=device)
    return Classifier(blob, backbone)


def predict(texts: list[str], classifier: str | Path) -> list[str]:
    """Labels for ``texts`` with the classifier at ``classifier`` (folder, .pkl or job:ID; a feature
    classifier or a classification head); a feature classifier's backbone is loaded once per process."""
    blob = load_classifier(classifier)
    backbone = None
    if "head" not in blob:
        key = blob["model"]
        if key not in _LOADED:
            _LOADED[key] = loading.load(key)
        backbone = _LOADED[key]
    return Classifier(blob, backbone).predict(list(texts))
