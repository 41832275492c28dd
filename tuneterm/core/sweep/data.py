"""A sweep's data: train, validation and test files in the sweep's folder, and the data's shape.

Trials train on ``train.jsonl``, are ranked on ``val.jsonl``, and only the winner (with the base
model and the runner-up) is scored on ``test.jsonl``. The dataset's own splits are used when it has
them; a missing validation or test split is cut from the training rows (seeded, stratified by
label for classification data) and the notes say so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.errors import DatasetError

HOLDOUT = 0.15  # the share of the training rows a missing split gets


@dataclass(frozen=True)
class SweepData:
    folder: Path
    shape: str  # classification | generation | extraction
    labels: tuple[str, ...]
    counts: dict
    notes: tuple[str, ...]

    @property
    def train(self) -> Path:
        return self.folder / "train.jsonl"

    @property
    def val(self) -> Path:
        return self.folder / "val.jsonl"

    @property
    def test(self) -> Path:
        return self.folder / "test.jsonl"


def _test_split(data: str, train: Path) -> Path | None:
    from tuneterm.core.datasets import store
    from tuneterm.core.errors import NotFoundError

    path = Path(data).expanduser()
    if not path.exists() and store.NAME_RE.match(data) and store.exists(data):
        rec = store.get(data)
        return rec.file("test").resolve() if "test" in rec.splits else None
    if path.is_file():
        sibling = path.with_name("test" + path.suffix)
        return sibling.resolve() if path.stem == "train" and sibling.is_file() else None
    try:
        found = store.resolve_path(data, "test").resolve()
    except NotFoundError:
        return None
    return found if found != train else None


def prepare(data: str, val: str | None, folder: Path, seed: int = 0) -> SweepData:
    """Copy (or cut) the splits into ``folder`` once; a resumed sweep finds them there."""
    from tuneterm.core.datasets.split import split_file
    from tuneterm.core.fsutil import atomic_write_json
    from tuneterm.core.jobs.plan import as_chat_jsonl, check_data, resolve_data

    meta_file = folder / "data.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return SweepData(folder, meta["shape"], tuple(meta["labels"]), meta["counts"], tuple(meta["notes"]))
    folder.mkdir(parents=True, exist_ok=True)
    train, val_path = resolve_data(data, val)
    test_path = _test_split(data, train)
    notes: list[str] = []
    for path, label in ((train, "training"), (val_path, "validation"), (test_path, "test")):
        if path:
            check_data(path, label)
    sources = {"train": as_chat_jsonl(train)}
    if val_path:
        sources["val"] = as_chat_jsonl(val_path)
    if test_path:
        sources["test"] = as_chat_jsonl(test_path)
    missing = [s for s in ("val", "test") if s not in sources]
    if missing:
        cut = folder / "cut"
        cut.mkdir(exist_ok=True)
        counts, meta = split_file(sources["train"], cut, HOLDOUT if "val" in missing else 0.0,
                                  HOLDOUT if "test" in missing else 0.0, seed)
        for split in ("train", *missing):
            sources[split] = cut / f"{split}.jsonl"
        how = "stratified by label" if meta.get("stratified_by") else "not stratified (no labels)"
        cut_rows = ", ".join(str(counts[s]) for s in missing)
        notes.append(f"the dataset has no {' or '.join(missing)} split: cut {cut_rows} "
                     f"row(s) from the training rows (seed {seed}, {how})")
    for split, src in sources.items():
        shutil.copyfile(src, folder / f"{split}.jsonl")
    shutil.rmtree(folder / "cut", ignore_errors=True)
    counts = {s: _count(folder / f"{s}.jsonl") for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        if counts[split] == 0:
            raise DatasetError(f"the {split} split is empty", [("data", data), ("folder", str(folder))],
                               "give a dataset with more rows")
    shape, labels = detect_shape(folder / "train.jsonl")
    meta = {"shape": shape, "labels": list(labels), "counts": counts, "notes": notes, "source": data}
    atomic_write_json(meta_file, meta)
    return SweepData(folder, shape, labels, counts, tuple(notes))


def _count(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def detect_shape(path: Path) -> tuple[str, tuple[str, ...]]:
    """classification (answers are labels; the labels), extraction (answers are JSON objects) or
    generation."""
    from tuneterm.core.datasets.labels import LabelTally
    from tuneterm.core.jsonl import iter_jsonl

    tally = LabelTally()
    answers = 0
    json_answers = 0
    for _, ex in iter_jsonl(path, what="dataset"):
        tally.add(ex)
        answer = next((m.get("content") for m in reversed(ex.get("messages") or [])
                       if m.get("role") == "assistant"), None)
        if isinstance(answer, str):
            answers += 1
            try:
                json_answers += isinstance(json.loads(answer), dict)
            except ValueError:
                pass
    dist = tally.distribution()
    if dist:
        return "classification", tuple(sorted(dist))
    if answers and json_answers >= 0.8 * answers:
        return "extraction", ()
    return "generation", ()
