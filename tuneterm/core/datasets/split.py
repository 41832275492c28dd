"""Deterministic train/val/test splits: seeded, stratified by label, no leakage of duplicates.

Exact duplicates (same canonical example) form one group and land in one split together.
Groups are shuffled with ``random.Random(seed)`` inside each stratum (one stratum per label
when the data is classification-like, else one), then test and val take groups until they
hold their share; the rest is train. Each split file keeps the rows in their original order.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from tuneterm.core.datasets.labels import LabelTally
from tuneterm.core.datasets.validate import example_digest
from tuneterm.core.errors import UsageError


def check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise UsageError("invalid split fractions", [("val", str(val)), ("test", str(test))],
                         "each is between 0 and 1 and together they leave some training data, e.g. --val 0.1 --test 0.1")


def assign(digests: list[bytes], labels: list[str] | None, val: float, test: float, seed: int) -> list[str]:
    """The split ("train" | "val" | "test") of each example, by position."""
    check_fractions(val, test)
    groups: dict[bytes, list[int]] = {}
    for i, d in enumerate(digests):
        groups.setdefault(d, []).append(i)
    strata: dict[str, list[list[int]]] = {}
    for members in groups.values():
        key = labels[members[0]] if labels else ""
        strata.setdefault(key, []).append(members)
    rng = random.Random(seed)
    out = ["train"] * len(digests)
    for key in sorted(strata):
        stratum = strata[key]
        rng.shuffle(stratum)
        n = sum(len(g) for g in stratum)
        want_test, want_val = round(n * test), round(n * val)
        got_test = got_val = 0
        for members in stratum:
            if got_test < want_test:
                split, got_test = "test", got_test + len(members)
            elif got_val < want_val:
                split, got_val = "val", got_val + len(members)
            else:
                continue
            for i in members:
                out[i] = split
    return out


def split_file(data: Path, out_dir: Path, val: float, test: float, seed: int) -> tuple[dict[str, int], dict]:
    """Split a canonical JSONL file into ``out_dir/{train,val,test}.jsonl`` (atomically, per file)."""
    check_fractions(val, test)
    digests: list[bytes] = []
    tally = LabelTally()
    label_list: list[str | None] = []
    from tuneterm.core.jsonl import iter_jsonl

    for _, ex in iter_jsonl(data, what="dataset"):
        digests.append(example_digest(ex))
        label_list.append(tally.add(ex))
    stratified = tally.distribution() is not None
    which = assign(digests, label_list if stratified else None, val, test, seed)  # type: ignore[arg-type]
    wanted = ["train"] + [s for s, f in (("val", val), ("test", test)) if f > 0]
    tmp_paths = {s: out_dir / f".{s}.jsonl.tmp" for s in wanted}
    handles = {s: open(p, "w", encoding="utf-8") for s, p in tmp_paths.items()}
    counts = {s: 0 for s in wanted}
    try:
        with open(data, encoding="utf-8") as fh:
            i = 0
            for line in fh:
                if not line.strip():
                    continue
                split = which[i]
                handles[split].write(line if line.endswith("\n") else line + "\n")
                counts[split] += 1
                i += 1
        for h in handles.values():
            h.flush()
            os.fsync(h.fileno())
            h.close()
        for s, p in tmp_paths.items():
            os.replace(p, out_dir / f"{s}.jsonl")
        for s in ("train", "val", "test"):
            if s not in wanted and (out_dir / f"{s}.jsonl").exists():
                (out_dir / f"{s}.jsonl").unlink()
    except BaseException:
        for h in handles.values():
            h.close()
        for p in tmp_paths.values():
            p.unlink(missing_ok=True)
        raise
    meta = {"from": "tuneterm data split", "seed": seed, "val": val, "test": test,
            "stratified_by": "label" if stratified else None, "duplicates": "kept within one split"}
    return counts, meta


def split_dataset(name: str, val: float = 0.1, test: float = 0.1, seed: int = 0):
    """Split workspace dataset ``name`` (all its rows, whatever splits it had) and record the result."""
    from tuneterm.core.datasets import store

    rec = store.get(name)
    counts, meta = split_file(rec.file(None), rec.path, val, test, seed)
    return store.update_splits(name, counts, meta)
