"""Datasets in the workspace: ``datasets/<name>/`` folders plus rows of the ``datasets`` table.

A dataset folder holds:

    data.jsonl                 every example, canonical OpenAI chat JSONL (or OpenAI DPO JSONL)
    train.jsonl val.jsonl ...  the splits, when it has some (each line also in data.jsonl)
    meta.json                  provenance: source files with their SHA-256, format, mapping, counts
    rejects.<ext>              with --skip-invalid: the bad rows, byte for byte as in the source
    rejects.problems.jsonl     why each of those rows was rejected

An import is built in a hidden temporary folder and renamed into place, so a crash never
leaves half a dataset; the source file is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from tuneterm.core.datasets import formats
from tuneterm.core.datasets.labels import LabelTally
from tuneterm.core.datasets.rules import ERROR
from tuneterm.core.datasets.validate import Validator
from tuneterm.core.errors import DatasetError, NotFoundError, UsageError  # noqa: F401 (NotFoundError re-exported)
from tuneterm.core.fsutil import lock_path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "eval": "val", "training": "train"}
DATA_FILE = "data.jsonl"


@dataclass
class DatasetRecord:
    name: str
    source_path: str
    source_format: str
    content_hash: str
    n_examples: int
    created_at: str
    path: Path
    n_rejected: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def file(self, split: str | None = None) -> Path:
        if split is None or split == "all":
            return self.path / DATA_FILE
        split = SPLIT_ALIASES.get(split, split)
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise NotFoundError(f"dataset {self.name} has no {split} split", [("splits", have)],
                                f"run `tuneterm data split {self.name} --val 0.1 --test 0.1`")
        return self.path / f"{split}.jsonl"

    def to_dict(self) -> dict:
        return {"name": self.name, "source_path": self.source_path, "source_format": self.source_format,
                "content_hash": self.content_hash, "n_examples": self.n_examples, "n_rejected": self.n_rejected,
                "splits": self.splits, "created_at": self.created_at, "path": str(self.path), "meta": self.meta}


def _datasets_dir() -> Path:
    from tuneterm.core.workspace import workspace

    return workspace().datasets_dir


def _connect():
    from tuneterm.core import db

    return db.connect()


def _from_row(row) -> DatasetRecord:
    return DatasetRecord(
        name=row["name"], source_path=row["source_path"], source_format=row["source_format"],
        content_hash=row["content_hash"], n_examples=row["n_examples"], created_at=row["created_at"],
        path=_datasets_dir() / row["name"], n_rejected=row["n_rejected"],
        splits=json.loads(row["splits"] or "{}"), meta=json.loads(row["meta"] or "{}"),
    )


def list_datasets() -> list[DatasetRecord]:
    with _connect() as conn:
        rows = conn.execute("SELECT * FROM datasets ORDER BY name").fetchall()
    return [_from_row(r) for r in rows]


def exists(name: str) -> bool:
    with _connect() as conn:
        return conn.execute("SELECT 1 FROM datasets WHERE name = ?", (name,)).fetchone() is not None


def get(name: str) -> DatasetRecord:
    with _connect() as conn:
        row = conn.execute("SELECT * FROM datasets WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no dataset named {name!r}", [("workspace datasets", _names_hint())],
                            "see `tuneterm data ls`, or import a file with `tuneterm data import PATH`")
    return _from_row(row)


def _names_hint() -> str:
    with _connect() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name LIMIT 12")]
    return ", ".join(names) or "none"


def remove(name: str) -> None:
    rec = get(name)
    with _connect() as conn:
        conn.execute("DELETE FROM datasets WHERE name = ?", (name,))
    if rec.path.exists():
        trash = rec.path.with_name(f".rm-{name}-{os.getpid()}")
        os.replace(rec.path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def resolve_path(name_or_path: str, split: str | None = None) -> Path:
    """The canonical JSONL file of a workspace dataset (a split of it), or an existing file path."""
    from tuneterm.core.resources import builtin_fallback

    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (NAME_RE.match(text) and exists(text)):
        path = builtin_fallback(path)  # sample_data/... from any directory
    if path.is_file():
        return path
    if NAME_RE.match(text) and exists(text):
        return get(text).file(split)
    if path.is_dir():
        found = _split_files(path)
        if found:
            key = SPLIT_ALIASES.get(split or "train", split or "train")
            if key in found:
                return found[key]
    raise NotFoundError(f"no dataset or file named {text!r}", [("workspace datasets", _names_hint())],
                        "pass a file path, or a name from `tuneterm data ls` (import one with `tuneterm data import PATH`)")


def _split_files(folder: Path) -> dict[str, Path]:
    """``train.jsonl``/``val.jsonl``/``validation.csv``/... in a folder, by split; or the split
    folders of an HF ``DatasetDict.save_to_disk`` folder."""
    found: dict[str, Path] = {}
    hf_dict = folder / "dataset_dict.json"
    if hf_dict.is_file():
        try:
            names = json.loads(hf_dict.read_text(encoding="utf-8")).get("splits", [])
        except (OSError, ValueError, AttributeError):
            names = []
        for split_name in names if isinstance(names, list) else []:
            split = SPLIT_ALIASES.get(str(split_name).lower(), str(split_name).lower())
            if split in SPLITS and split not in found and (folder / str(split_name)).is_dir():
                found[split] = folder / str(split_name)
        if "train" in found:
            return {k: found[k] for k in SPLITS if k in found}
        found = {}
    for child in sorted(folder.iterdir()):
        if not child.is_file() or child.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
            continue
        split = SPLIT_ALIASES.get(child.stem.lower(), child.stem.lower())
        if split in SPLITS and split not in found:
            found[split] = child
    if "train" not in found:
        return {}
    return {k: found[k] for k in SPLITS if k in found}


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsageError("invalid dataset name", [("name", name)],
                         "use letters, digits, '.', '_' or '-' (up to 64 characters), e.g. --name tickets")


def _default_name(src: Path) -> str:
    stem = src.name if src.is_dir() else src.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64]
    return name or "dataset"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    from tuneterm.core.fsutil import sha256_file

    return sha256_file(path)


class _Writer:
    """Writes canonical lines to data.jsonl (hashing them) and to an optional split file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = open(folder / DATA_FILE, "wb")
        self.hash = hashlib.sha256()
        self.n = 0

    def write(self, example: dict, split_fh=None) -> None:
        try:
            line = (json.dumps(example, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (valid JSON escapes): keep them escaped, losslessly
            line = (json.dumps(example) + "\n").encode("ascii")
        self.data.write(line)
        self.hash.update(line)
        if split_fh is not None:
            split_fh.write(line)
        self.n += 1

    def close(self) -> None:
        self.data.flush()
        os.fsync(self.data.fileno())
        self.data.close()


def import_dataset(path: str | Path, name: str | None = None, fmt: str | None = None, skip_invalid: bool = False,
                   mapping: dict | None = None, replace: bool = False) -> DatasetRecord:
    """Import a file (or a folder of train/val/test files) as workspace dataset ``name``."""
    src = Path(path).expanduser()
    if not src.exists():
        raise NotFoundError("no such dataset file", [("path", str(src))], "check the path")
    src = src.resolve()
    name = name or _default_name(src)
    _check_name(name)
    if exists(name) and not replace:
        raise UsageError(f"a dataset named {name!r} already exists", [("path", str(get(name).path))],
                         f"pass --name NEW_NAME, or `tuneterm data rm {name}` first")
    parts = _split_files(src) if src.is_dir() else {}
    sources: list[tuple[str | None, Path]] = list(parts.items()) if parts else [(None, src)]
    root = _datasets_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=root))
    try:
        rec = _build(tmp, name, src, sources, fmt, mapping, skip_invalid)
        _install(tmp, rec, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return get(name)


def _build(tmp: Path, name: str, src: Path, sources, fmt, mapping, skip_invalid) -> DatasetRecord:
    writer = _Writer(tmp)
    seen: dict = {}
    labels = LabelTally()
    splits: dict[str, int] = {}
    counts: dict[str, int] = {}
    files_meta: list[dict] = []
    errors: list[str] = []
    n_rejected = 0
    schemas: set[str] = set()
    try:
        for split, file in sources:
            form = formats.detect(file, fmt, mapping)
            validator = Validator(str(file), fmt=str(form), split=split, seen=seen)  # overlap across splits
            split_fh = open(tmp / f"{split}.jsonl", "wb") if split else None
            suffix = f"-{split}" if split else ""
            ext = {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}.get(form.container, ".jsonl")
            rejects_path = tmp / f"rejects{suffix}{ext}"
            rejects = problems_fh = None
            n_split = 0
            for rec in formats.iter_records(file, form, mapping):
                found = validator.feed(rec)
                bad = [p for p in found if p.severity == ERROR]
                if rec.example is not None and not bad:
                    writer.write(rec.example, split_fh)
                    labels.add(rec.example)
                    schemas.add(rec.schema or "chat")
                    n_split += 1
                    continue
                if not bad:  # a blank line: nothing to keep, nothing lost
                    continue
                n_rejected += 1
                if len(errors) < 8:
                    errors.append(f"{bad[0].unit} {bad[0].line}: {bad[0].kind}: {bad[0].message}")
                if not skip_invalid:
                    continue
                if rejects is None:
                    rejects = open(rejects_path, "wb")
                    header = formats.raw_header(file, form)
                    if header is not None:
                        rejects.write(header + b"\n")
                    problems_fh = open(tmp / f"rejects{suffix}.problems.jsonl", "w", encoding="utf-8")
                rejects.write(rec.raw + b"\n")
                problems_fh.write(json.dumps({"source": str(file), rec.unit: rec.line,
                                              "problems": [p.to_dict() for p in bad]}, ensure_ascii=False) + "\n")
            report = validator.finish()
            for kind, n in report.counts.items():
                counts[kind] = counts.get(kind, 0) + n
            for fh in (split_fh, rejects, problems_fh):
                if fh is not None:
                    fh.close()
            if split:
                splits[split] = n_split
            files_meta.append({"path": str(file), "split": split, "format": str(form), "sha256": _sha256(file),
                               "bytes": file.stat().st_size if file.is_file() else None, "examples": n_split})
    finally:
        writer.close()
    if n_rejected and not skip_invalid:
        raise DatasetError(
            f"{n_rejected} row(s) of {src.name} have errors; nothing was imported",
            [("first problems", "\n    " + "\n    ".join(errors))],
            "fix them (see `tuneterm data validate PATH`), or pass --skip-invalid to import the good rows "
            "and keep the bad ones, untouched, in a rejects file",
        )
    if writer.n == 0:
        raise DatasetError(f"{src.name} has no valid examples", [("path", str(src))] +
                           ([("first problems", "\n    " + "\n    ".join(errors))] if errors else []),
                           "see `tuneterm data validate PATH`")
    from tuneterm import __version__

    form_name = files_meta[0]["format"] if len({f["format"] for f in files_meta}) == 1 else "mixed"
    meta = {
        "source": {"path": str(src), "files": files_meta}, "mapping": mapping or {}, "forced_format": fmt,
        "schema": "dpo" if schemas == {"dpo"} else "chat", "imported_at": _now(),
        "imported_by": f"tuneterm {__version__}", "validation": dict(sorted(counts.items())),
        "labels": labels.distribution(),
    }
    if splits:
        meta["split"] = {"from": "source files"}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return DatasetRecord(name=name, source_path=str(src), source_format=form_name,
                         content_hash=writer.hash.hexdigest(), n_examples=writer.n, created_at=meta["imported_at"],
                         path=_datasets_dir() / name, n_rejected=n_rejected, splits=splits, meta=meta)


def _install(tmp: Path, rec: DatasetRecord, replace: bool) -> None:
    """Rename the built folder into place and record it, under a lock on the name: of several imports
    of one name at once, one wins and the others get the clean "already exists" error."""
    from filelock import FileLock

    with FileLock(str(lock_path(rec.path))):
        _install_locked(tmp, rec, replace)


def _install_locked(tmp: Path, rec: DatasetRecord, replace: bool) -> None:
    target = rec.path
    old = None
    if target.exists() or (not replace and exists(rec.name)):
        if not replace:
            raise UsageError(f"the folder for dataset {rec.name!r} already exists", [("path", str(target))],
                             "choose another --name")
        old = target.with_name(f".replaced-{rec.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    try:
        with _connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO datasets (name, source_path, source_format, content_hash, n_examples, "
                "n_rejected, splits, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.name, rec.source_path, rec.source_format, rec.content_hash, rec.n_examples, rec.n_rejected,
                 json.dumps(rec.splits), json.dumps(rec.meta), rec.created_at))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def update_splits(name: str, splits: dict[str, int], split_meta: dict) -> DatasetRecord:
    """Record new split counts (the files are already in place)."""
    rec = get(name)
    meta = dict(rec.meta)
    meta["split"] = split_meta
    from tuneterm.core.fsutil import atomic_write_text

    atomic_write_text(rec.path / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    with _connect() as conn:
        conn.execute("UPDATE datasets SET splits = ?, meta = ? WHERE name = ?",
                     (json.dumps(splits), json.dumps(meta), name))
    return get(name)


def append_examples(name: str, examples: list[dict], split: str | None = None) -> DatasetRecord:
    """Append canonical examples to dataset ``name`` (to ``split``, default train when it has splits);
    a dataset that does not exist yet is created from them.

    Each example must pass validation (errors raise :class:`DatasetError`, nothing is written);
    files are replaced atomically and the hash and counts are updated.
    """
    from tuneterm.core.datasets.formats import Record
    from tuneterm.core.fsutil import sha256_file

    if not exists(name):
        _check_name(name)
        with tempfile.TemporaryDirectory(prefix=".append-", dir=_datasets_dir()) as tmp:
            src = Path(tmp) / f"{name}.jsonl"
            src.write_text("".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples), encoding="utf-8")
            import_dataset(src, name=name)
        return get(name)
    rec = get(name)
    split = SPLIT_ALIASES.get(split, split) if split else ("train" if "train" in rec.splits else None)
    if split is not None and split not in rec.splits:
        rec.file(split)  # raises NotFoundError with the hint
    validator = Validator(f"{name} (appended)")
    lines = []
    for i, ex in enumerate(examples, 1):
        bad = [p for p in validator.feed(Record(i, b"", ex, [], "example", "dpo" if "input" in ex else "chat"))
               if p.severity == ERROR]
        if bad:
            raise DatasetError("the example to append is invalid", [("problem", f"{bad[0].kind}: {bad[0].message}")],
                               bad[0].hint)
        lines.append((json.dumps(ex, ensure_ascii=False) + "\n").encode("utf-8"))
    targets = [rec.path / DATA_FILE] + ([rec.path / f"{split}.jsonl"] if split else [])
    for target in targets:
        tmp = target.with_name(f".{target.name}.append.tmp")
        shutil.copyfile(target, tmp)
        with open(tmp, "ab") as fh:
            if target.stat().st_size and not target.read_bytes().endswith(b"\n"):
                fh.write(b"\n")
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    splits = dict(rec.splits)
    if split:
        splits[split] += len(lines)
    with _connect() as conn:
        conn.execute("UPDATE datasets SET n_examples = ?, splits = ?, content_hash = ? WHERE name = ?",
                     (rec.n_examples + len(lines), json.dumps(splits), sha256_file(rec.path / DATA_FILE), name))
    return get(name)


def validate_dataset(name: str, model: str | None = None):
    """Validate a workspace dataset: its split files together (overlap included), or data.jsonl."""
    from tuneterm.core.datasets.validate import validate_file, validate_splits

    rec = get(name)
    if rec.splits:
        return validate_splits({s: rec.file(s) for s in rec.splits}, model)
    return validate_file(rec.file(None), model)


def iter_dataset(name: str, split: str | None = None) -> Iterator[dict]:
    """The canonical examples of a workspace dataset (or one split), streamed."""
    from tuneterm.core.jsonl import iter_jsonl

    for _, example in iter_jsonl(get(name).file(split), what=f"dataset {name}"):
        yield example


def import_samples(sample_dir: str | Path) -> list[str]:
    """Import the datasets listed in ``sample_dir/manifest.json`` that the workspace lacks."""
    sample_dir = Path(sample_dir)
    manifest_path = sample_dir / "manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError("the sample data has no manifest", [("path", str(manifest_path))],
                            "run `python scripts/make_sample_data.py`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    imported = []
    for name, entry in manifest.get("datasets", {}).items():
        if exists(name):
            continue
        listed = entry["splits"]
        files = {split: sample_dir / listed[split] for split in sorted(listed, key=_split_order)}
        _import_split_files(name, files)
        imported.append(name)
    return imported


def _import_split_files(name: str, files: dict[str, Path]) -> DatasetRecord:
    _check_name(name)
    root = _datasets_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=root))
    try:
        first = next(iter(files.values()))
        rec = _build(tmp, name, first.parent, list(files.items()), None, None, False)
        _install(tmp, rec, replace=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return get(name)
